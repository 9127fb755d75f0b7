#!/usr/bin/env python3
"""Summarise the raw measurements written by bench/run.sh.

Input:  --raw  TSV lines "registry<TAB>round<TAB>metric<TAB>value"
        --meta TSV lines "key<TAB>value"
Output: a table on stdout and a JSON document at --json.

Nothing here passes or fails on the numbers: it only reports.
"""

import argparse
import json
import math
import statistics
import sys

REGISTRIES = ("berth", "distribution")

# key, label, unit, which direction is better, description
METRICS = [
    ("push_s", "blob push", "s", "lower",
     "wall clock from the POST that opens the upload to the 201 of the PUT ?digest=; "
     "the whole blob is sent in one chunked PATCH"),
    ("push_mibps", "blob push rate", "MiB/s", "higher",
     "blob size divided by push_s"),
    ("push_cpu_s", "server CPU, push", "s", "lower",
     "user+system CPU time the server process used during the push (all threads)"),
    ("pull_s", "blob pull", "s", "lower",
     "curl time_total of GET /v2/<repo>/blobs/<digest>, following redirects, body to /dev/null"),
    ("pull_mibps", "blob pull rate", "MiB/s", "higher",
     "blob size divided by pull_s"),
    ("pull_cpu_s", "server CPU, pull", "s", "lower",
     "user+system CPU time the server process used during the pull"),
    ("manifest_rps", "manifest GET by tag", "req/s", "higher",
     "wrk requests/sec on GET /v2/bench/manifest/manifests/latest"),
    ("manifest_p50_ms", "manifest GET p50", "ms", "lower",
     "wrk --latency 50th percentile"),
    ("manifest_p99_ms", "manifest GET p99", "ms", "lower",
     "wrk --latency 99th percentile"),
    ("manifest_cpu_us_per_req", "server CPU / manifest GET", "us", "lower",
     "server user+system CPU time during the measured wrk run divided by the requests wrk completed"),
    ("rss_idle_mib", "RSS at start", "MiB", "lower",
     "VmRSS of the server process once it answers /v2/"),
    ("rss_peak_push_mib", "peak RSS, push", "MiB", "lower",
     "VmHWM of a fresh server process read right after the blob push"),
    ("rss_peak_round_mib", "peak RSS, round", "MiB", "lower",
     "VmHWM at the end of the round (push, pull and manifest load)"),
    ("host_busy_pct", "host CPU busy before round", "%", "lower",
     "share of all CPUs busy during one second before the server started (other load on the machine)"),
    ("push_other_cpu_s", "other CPU during push", "s", "lower",
     "CPU time used during the push by everything except the server and the benchmark's own clients "
     "(other processes, kernel threads, interrupts); high values mean interference"),
    ("pull_other_cpu_s", "other CPU during pull", "s", "lower",
     "same, during the pull"),
    ("wrk_other_cpu_s", "other CPU during wrk", "s", "lower",
     "same, during the measured wrk run"),
    ("manifest_non2xx", "wrk non-2xx/3xx", "count", "lower",
     "responses wrk counted as errors; must be 0 for manifest numbers to mean anything"),
    ("manifest_socket_errors", "wrk socket errors", "count", "lower",
     "connect/read/write/timeout errors reported by wrk"),
]
# Which timed phase each metric comes from; a phase is "disturbed" when other
# processes used more than DISTURBED_SHARE of the machine while it ran.
PHASE_OF = {
    "push_s": "push", "push_mibps": "push", "push_cpu_s": "push",
    "pull_s": "pull", "pull_mibps": "pull", "pull_cpu_s": "pull",
    "manifest_rps": "wrk", "manifest_p50_ms": "wrk", "manifest_p99_ms": "wrk",
    "manifest_cpu_us_per_req": "wrk",
}
DISTURBED_SHARE = 0.10
# Shown in the table only when some value is non-zero.
ONLY_IF_NONZERO = {"manifest_non2xx", "manifest_socket_errors"}


def to_float(text):
    try:
        value = float(text)
    except ValueError:
        return None
    return None if math.isnan(value) else value


def read_tsv(path, fields):
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if line:
                parts = line.split("\t", fields - 1)
                if len(parts) == fields:
                    rows.append(parts)
    return rows


def median(values):
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fmt(value, unit):
    if value is None:
        return "-"
    if unit == "count":
        return "%d" % value
    if unit in ("req/s", "%"):
        return "%.0f" % value
    if unit == "s":
        return "%.3f" % value if value < 100 else "%.1f" % value
    if unit == "ms":
        return "%.2f" % value if value < 100 else "%.0f" % value
    return "%.1f" % value


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", required=True)
    parser.add_argument("--meta", required=True)
    parser.add_argument("--counts", help="TSV lines registry, probe, service or operation, "
                        "requests per registry request (STORAGE=s3 runs)")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()

    meta = dict(read_tsv(args.meta, 2))
    blob_bytes = int(meta["blob_bytes"])
    blob_mib = blob_bytes / (1024 * 1024)

    # values[metric][registry][round] = float
    values = {}
    rounds = set()
    for registry, rnd, metric, text in read_tsv(args.raw, 4):
        rnd = int(rnd)
        rounds.add(rnd)
        values.setdefault(metric, {}).setdefault(registry, {})[rnd] = to_float(text)
    for derived, source in (("push_mibps", "push_s"), ("pull_mibps", "pull_s")):
        for registry, per_round in values.get(source, {}).items():
            for rnd, seconds in per_round.items():
                rate = blob_mib / seconds if seconds else None
                values.setdefault(derived, {}).setdefault(registry, {})[rnd] = rate
    rounds = sorted(rounds)

    cpus = int(meta.get("cpus", "1") or 1)
    wrk_s = float(meta.get("knob_WRK_SECONDS", "0") or 0)

    def disturbed_share(registry, rnd, phase):
        other = values.get("%s_other_cpu_s" % phase, {}).get(registry, {}).get(rnd)
        wall = wrk_s if phase == "wrk" else values.get("%s_s" % phase, {}).get(registry, {}).get(rnd)
        if other is None or not wall:
            return None
        return other / (wall * cpus)

    disturbed = {}  # (registry, round, phase) -> share of the machine used by others
    for registry in REGISTRIES:
        for rnd in rounds:
            for phase in ("push", "pull", "wrk"):
                share = disturbed_share(registry, rnd, phase)
                other = values.get("%s_other_cpu_s" % phase, {}).get(registry, {}).get(rnd)
                # 0.05 s = 5 clock ticks: below that the tick resolution dominates
                if share is not None and share > DISTURBED_SHARE and other >= 0.05:
                    disturbed[(registry, rnd, phase)] = share

    result_metrics = {}
    for key, label, unit, better, description in METRICS:
        entry = {"label": label, "unit": unit, "better": better, "description": description}
        medians = {}
        for registry in REGISTRIES:
            per_round = values.get(key, {}).get(registry, {})
            series = [per_round.get(r) for r in rounds]
            medians[registry] = median(series)
            entry[registry] = {"rounds": series, "median": medians[registry]}
            if key in PHASE_OF:
                entry[registry]["disturbed"] = [
                    (registry, r, PHASE_OF[key]) in disturbed for r in rounds]
        b, d = medians["berth"], medians["distribution"]
        entry["ratio_berth_over_distribution"] = (b / d) if (b is not None and d) else None
        result_metrics[key] = entry

    # ---------------------------------------------------------------- table
    title = "Berth vs CNCF Distribution: %d MiB blob, %d round(s), wrk -t%s -c%s -d%ss" % (
        blob_mib, len(rounds), meta.get("knob_WRK_THREADS"), meta.get("knob_WRK_CONNECTIONS"),
        meta.get("knob_WRK_SECONDS"))
    round_cols = ["r%d" % r for r in rounds]
    header = ["metric", "unit", "registry"] + round_cols + ["median", "berth/dist", "better"]
    lines = []
    for key, label, unit, better, _ in METRICS:
        entry = result_metrics[key]
        if key in ONLY_IF_NONZERO and not any(
                v for reg in REGISTRIES for v in entry[reg]["rounds"] if v is not None):
            continue
        if key == "push_s" or key == "pull_s":
            label = "%s %d MiB" % (label, blob_mib)
        for i, registry in enumerate(REGISTRIES):
            row = [label if i == 0 else "", unit if i == 0 else "", registry]
            marks = entry[registry].get("disturbed") or [False] * len(rounds)
            row += [fmt(v, unit) + ("*" if mark else "") for v, mark in zip(entry[registry]["rounds"], marks)]
            row.append(fmt(entry[registry]["median"], unit))
            ratio = entry["ratio_berth_over_distribution"]
            if i == 0:
                row += ["-" if ratio is None else "%.2f" % ratio, better]
            else:
                row += ["", ""]
            lines.append(row)
        lines.append(None)
    widths = [len(h) for h in header]
    for row in lines:
        if row:
            widths = [max(w, len(c)) for w, c in zip(widths, row)]

    def render(row):
        cells = []
        for idx, (cell, width) in enumerate(zip(row, widths)):
            cells.append(cell.ljust(width) if idx < 3 or idx == len(row) - 1 else cell.rjust(width))
        return "  ".join(cells).rstrip()

    out = sys.stdout
    out.write("\n" + title + "\n")
    out.write("berth: %s %s(access logs=%s, repo at %s)\n" % (
        meta.get("berth_bin"), (meta.get("berth_args") + " ") if meta.get("berth_args") else "",
        meta.get("access_logs"), meta.get("git_rev")))
    out.write("distribution: %s (%s)\n" % (meta.get("distribution_bin"), meta.get("distribution_version")))
    out.write("host: %s CPU(s) %s, kernel %s, data on %s, pinned=%s, drop_caches=%s\n" % (
        meta.get("cpus"), meta.get("cpu_model"), meta.get("kernel"), meta.get("filesystem"),
        meta.get("knob_PIN_CPUS"), meta.get("knob_DROP_CACHES")))
    out.write("\n" + render(header) + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in lines:
        out.write((render(row) if row else "") + "\n")
    out.write("median over rounds; berth/dist = median(berth) / median(distribution): "
              "below 1 is better where 'better' says lower, above 1 where it says higher.\n")
    out.write("These are reported, not asserted. Run took %ss.\n" % meta.get("duration_s"))
    def total(key):
        return sum(v for reg in REGISTRIES for v in result_metrics[key][reg]["rounds"] if v)
    if total("manifest_non2xx"):
        out.write("WARNING: wrk got non-2xx/3xx answers: the manifest numbers measure errors, not GETs.\n")
    if total("manifest_socket_errors"):
        out.write("note: wrk reported socket errors (usually timeouts of requests slower than 2 s); "
                  "see the wrk logs if KEEP_RUN_DIR=1.\n")
    if disturbed:
        out.write("* = disturbed: other processes used more than %d%% of the machine during that phase "
                  "(%s). Those figures are noisy; compare unmarked rounds or rerun on a quiet machine.\n" % (
                      100 * DISTURBED_SHARE, "; ".join(
                          "%s r%d %s %.0f%%" % (reg, rnd, phase, 100 * share)
                          for (reg, rnd, phase), share in sorted(disturbed.items()))))
    busy = [v for reg in REGISTRIES for v in result_metrics["host_busy_pct"][reg]["rounds"]
            if v is not None and v > float(meta.get("knob_IDLE_MAX_BUSY", 25))]
    if busy:
        out.write("WARNING: the machine was not idle before %d measurement(s) (up to %.0f%% CPU busy): "
                  "expect noise; rerun on a quiet machine or with IDLE_WAIT=120.\n" % (len(busy), max(busy)))

    # ------------------------------------------------------- request counts
    counts = {}  # counts[registry][probe][service or operation] = requests per registry request
    if args.counts:
        for registry, probe, what, text in read_tsv(args.counts, 4):
            counts.setdefault(registry, {}).setdefault(probe, {})[what] = to_float(text)
    if counts:
        out.write("\nBackend requests per registry request (storage: %s), through a counting proxy:\n"
                  % meta.get("storage"))
        probes = []
        for per_probe in counts.values():
            probes += [p for p in per_probe if p not in probes]
        rows = [["request", "registry", "S3", "DynamoDB", "operations"]]
        for probe in probes:
            for registry in REGISTRIES:
                seen = counts.get(registry, {}).get(probe)
                if seen is None:
                    continue
                operations = ", ".join("%s %g" % (k, v) for k, v in sorted(seen.items())
                                       if ":" in k and v) or "none"
                rows.append([probe.replace("_", " "), registry, "%g" % seen.get("s3", 0),
                             "%g" % seen.get("dynamodb", 0), operations])
        col = [max(len(r[i]) for r in rows) for i in range(4)]
        for row in rows:
            out.write("  ".join(c.ljust(w) for c, w in zip(row, col)) + "  " + row[4] + "\n")

    # ----------------------------------------------------------------- JSON
    knobs = {k[len("knob_"):]: v for k, v in meta.items() if k.startswith("knob_")}
    document = {
        "schema": 1,
        "started_at": meta.get("started_at"),
        "duration_s": to_float(meta.get("duration_s", "nan")),
        "rounds": rounds,
        "blob": {"bytes": blob_bytes, "digest": meta.get("blob_digest")},
        "knobs": knobs,
        "registries": {
            "berth": {"binary": meta.get("berth_bin"), "args": meta.get("berth_args"),
                      "access_logs": meta.get("access_logs"), "git_rev": meta.get("git_rev")},
            "distribution": {"binary": meta.get("distribution_bin"),
                             "version": meta.get("distribution_version")},
        },
        "environment": {k: meta.get(k) for k in (
            "kernel", "cpus", "cpu_model", "mem_total_kb", "curl_version", "wrk_version",
            "bench_dir", "filesystem")},
        "metrics": result_metrics,
        "storage": meta.get("storage"),
        "backend_requests_per_request": counts,
        "disturbed_phases": [
            {"registry": reg, "round": rnd, "phase": phase, "other_cpu_share": share}
            for (reg, rnd, phase), share in sorted(disturbed.items())],
        "note": "benchmark figures are reported, never asserted",
    }
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")
    out.write("JSON: %s\n" % args.json)


if __name__ == "__main__":
    main()
