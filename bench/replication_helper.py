#!/usr/bin/env python3
"""Helpers for bench/replication.sh (standard library only).

  make-layout DIR MIB      build an OCI image layout in DIR: one gzip layer (a tar holding MIB MiB
                           of random bytes, gzip level 0, so it stays incompressible and skopeo
                           keeps it as it is), a small config and an OCI image manifest tagged v1.
                           Prints "<manifest digest> <layer digest> <layer bytes>".
  sample-rss PID MS OUT    read VmRSS, RssAnon and RssFile of PID every MS milliseconds until
                           SIGTERM/SIGINT or PID exits (OUT.ready appears after the first sample); then writes to OUT, in kB: "<samples>
                           <max VmRSS> <VmHWM> <max RssAnon> <max RssFile> <first RssAnon>
                           <first RssFile> <first VmRSS>".
  report RAW META JSON     summarise the raw TSV ("tool<TAB>run<TAB>metric<TAB>value") into a
                           table on stdout and a JSON document.

Figures are reported, never asserted.
"""

import hashlib
import json
import math
import os
import signal
import statistics
import sys
import tarfile
import time
import zlib

# ------------------------------------------------------------------ make-layout ----


class _Random:
    """A file-like object giving `size` random bytes."""

    def __init__(self, size):
        self.left = size

    def read(self, n=-1):
        if n is None or n < 0 or n > self.left:
            n = self.left
        n = min(n, 4 << 20)
        self.left -= n
        return os.urandom(n)


class _GzipSink:
    """Takes the tar stream: hashes it (diff_id), gzips it at level 0, hashes and writes that."""

    def __init__(self, out):
        self.out = out
        self.tar_hash = hashlib.sha256()
        self.gz_hash = hashlib.sha256()
        self.gz_size = 0
        self.z = zlib.compressobj(0, zlib.DEFLATED, 31)  # 31: gzip framing

    def _emit(self, data):
        if data:
            self.gz_hash.update(data)
            self.gz_size += len(data)
            self.out.write(data)

    def write(self, data):
        self.tar_hash.update(data)
        self._emit(self.z.compress(data))
        return len(data)

    def close(self):
        self._emit(self.z.flush())


def _put_blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return digest


def make_layout(layout, mib):
    blobs = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    tmp = os.path.join(blobs, "layer.tmp")
    with open(tmp, "wb") as out:
        sink = _GzipSink(out)
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo("random.bin")
            info.size = mib << 20
            info.mtime = 0
            info.mode = 0o644
            tar.addfile(info, _Random(info.size))
        sink.close()
    layer = sink.gz_hash.hexdigest()
    os.replace(tmp, os.path.join(blobs, layer))
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sink.tar_hash.hexdigest()]},
        "history": [{"created_by": "bench/replication_helper.py make-layout"}],
    }, separators=(",", ":")).encode()
    config_digest = _put_blob(layout, config)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": "sha256:" + layer, "size": sink.gz_size}],
    }, separators=(",", ":")).encode()
    manifest_digest = _put_blob(layout, manifest)
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:" + manifest_digest, "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}, f)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    print(f"sha256:{manifest_digest} sha256:{layer} {sink.gz_size}")


# ------------------------------------------------------------------- sample-rss ----


def _status_kb(pid, fields):
    found = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in fields:
                found[key] = int(rest.split()[0])
    return found


def sample_rss(pid, interval_ms, out):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    fields = ("VmRSS", "VmHWM", "RssAnon", "RssFile")
    samples, first = 0, None
    peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    hwm = 0
    interval = interval_ms / 1000.0

    def look():
        nonlocal samples, first, hwm
        kb = _status_kb(pid, fields)
        samples += 1
        if first is None:
            first = kb
        for key in peak:
            peak[key] = max(peak[key], kb.get(key, 0))
        hwm = kb.get("VmHWM", hwm)

    while not stop:
        try:
            look()
        except OSError:
            break
        if samples == 1:  # tell the caller the baseline is taken
            with open(out + ".ready", "w"):
                pass
        time.sleep(interval)
    try:  # one last look after the stop signal
        look()
    except OSError:
        pass
    first = first or {}
    with open(out, "w") as f:
        f.write(f"{samples} {peak['VmRSS']} {hwm} {peak['RssAnon']} {peak['RssFile']} "
                f"{first.get('RssAnon', 0)} {first.get('RssFile', 0)} {first.get('VmRSS', 0)}\n")


# ----------------------------------------------------------------------- report ----

TOOLS = ("berth", "skopeo")

# key, label, unit, better, description, which tools have it
METRICS = [
    ("copy_s", "image copy A -> B", "s", "lower",
     "berth: wall clock from the POST of the execution to the poll (every 100 ms) that sees "
     "Succeed; skopeo: wall clock of `skopeo copy docker://A/... docker://B/...`", TOOLS),
    ("copy_mibps", "copy rate", "MiB/s", "higher", "layer size divided by copy_s", TOOLS),
    ("server_exec_s", "execution end - start (server)", "s", "lower",
     "end_time - start_time of the execution as Berth reports them (whole seconds)", ("berth",)),
    ("a_cpu_s", "CPU of A (source)", "s", "lower",
     "user+system CPU of registry A during the copy (for berth: the replicator itself)", TOOLS),
    ("b_cpu_s", "CPU of B (destination)", "s", "lower",
     "user+system CPU of registry B during the copy", TOOLS),
    ("client_cpu_s", "CPU of skopeo", "s", "lower",
     "user+system CPU of the skopeo process", ("skopeo",)),
    ("a_rss_base_mib", "A RSS before", "MiB", "lower",
     "VmRSS of A at the sampler's first sample, just before the copy starts", TOOLS),
    ("a_rss_peak_mib", "A RSS peak during", "MiB", "lower",
     "highest VmRSS of A sampled every 50 ms during the copy", TOOLS),
    ("a_rss_extra_mib", "A extra RSS (peak - before)", "MiB", "lower",
     "a_rss_peak_mib - a_rss_base_mib; target for berth: <= 64 MiB. Includes file pages mapped "
     "into A (Berth serves local blobs from an mmap), see the two rows below", TOOLS),
    ("a_anon_extra_mib", "A extra RssAnon (peak - before)", "MiB", "lower",
     "highest RssAnon sampled minus RssAnon at the first sample: heap and other private memory "
     "the copy cost A", TOOLS),
    ("a_file_extra_mib", "A extra RssFile (peak - before)", "MiB", "lower",
     "highest RssFile sampled minus RssFile at the first sample: page-cache pages of files "
     "mapped into A (the blob's mmap), shared with the page cache and reclaimable", TOOLS),
    ("a_hwm_mib", "A VmHWM after", "MiB", "lower",
     "VmHWM of A right after the copy (A's lifetime peak, A is not restarted between runs)", TOOLS),
    ("b_hwm_mib", "B VmHWM after", "MiB", "lower",
     "VmHWM of B (fresh process per run) right after the copy", TOOLS),
    ("rss_samples", "RSS samples", "count", "higher", "samples taken of A's VmRSS", TOOLS),
    ("host_busy_pct", "host CPU busy before run", "%", "lower",
     "share of all CPUs busy during one second before the run (other load on the machine)", TOOLS),
    ("other_cpu_s", "other CPU during copy", "s", "lower",
     "host CPU time during the copy used by neither A, B nor the benchmark's clients "
     "(other processes, kernel threads, including the kernel's share of the copy: writeback, "
     "loopback softirqs); values well above the idle baseline mean interference", TOOLS),
]


def _float(text):
    try:
        v = float(text)
    except ValueError:
        return None
    return None if math.isnan(v) else v


def _fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def report(raw_path, meta_path, json_path):
    meta = {}
    with open(meta_path) as f:
        for line in f:
            if "\t" in line:
                k, v = line.rstrip("\n").split("\t", 1)
                meta[k] = v
    values = {}  # (tool, metric) -> {run: value}
    runs = set()
    with open(raw_path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 4:
                continue
            tool, run, metric, value = parts
            runs.add(int(run))
            values.setdefault((tool, metric), {})[int(run)] = _float(value)
    runs = sorted(runs)
    # A run counts as disturbed when the host was busy before it started. The foreign CPU
    # during the copy is recorded too, but it is no clean signal: it includes the kernel's
    # share of the copy itself (writeback of B's files, loopback softirqs), about 3-4 s per
    # GiB on an idle 2-core VM.
    busy_limit = float(meta.get("knob_BUSY_LIMIT", "25") or 25)
    disturbed = {}
    for tool in TOOLS:
        for run in runs:
            busy = values.get((tool, "host_busy_pct"), {}).get(run)
            disturbed[(tool, run)] = bool(busy is not None and busy > busy_limit)
    doc = {
        "schema": 1,
        "benchmark": "replication",
        "started_at": meta.get("started_at"),
        "duration_s": _float(meta.get("duration_s", "nan")),
        "rounds": runs,
        "image": {k[len("image_"):]: meta[k] for k in meta if k.startswith("image_")},
        "knobs": {k[len("knob_"):]: meta[k] for k in meta if k.startswith("knob_")},
        "registries": {"berth": {"binary": meta.get("berth_bin"), "git_rev": meta.get("git_rev"),
                                 "access_logs": meta.get("access_logs")},
                       "skopeo": {"version": meta.get("skopeo_version")}},
        "environment": {k[len("env_"):]: meta[k] for k in meta if k.startswith("env_")},
        "metrics": {},
        "note": "benchmark figures are reported, never asserted",
    }
    rows = []
    for key, label, unit, better, desc, tools in METRICS:
        entry = {"label": label, "unit": unit, "better": better, "description": desc}
        medians = {}
        for tool in tools:
            by_run = values.get((tool, key), {})
            rounds = [by_run.get(r) for r in runs]
            present = [v for v in rounds if v is not None]
            med = statistics.median(present) if present else None
            medians[tool] = med
            entry[tool] = {"rounds": rounds, "median": med,
                           "disturbed": [disturbed[(tool, r)] for r in runs]}
        ratio = None
        if len(tools) == 2 and medians.get("berth") is not None and medians.get("skopeo"):
            ratio = medians["berth"] / medians["skopeo"]
        entry["ratio_berth_over_skopeo"] = ratio
        doc["metrics"][key] = entry
        rows.append((key, label, unit, better, tools, entry, ratio))
    doc["disturbed_runs"] = [{"tool": t, "run": r} for (t, r), d in sorted(disturbed.items()) if d]
    with open(json_path, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")

    # table
    head = ["metric", "unit", "tool"] + [f"r{r}" for r in runs] + ["median", "berth/skopeo", "better"]
    lines = []
    for key, label, unit, better, tools, entry, ratio in rows:
        for i, tool in enumerate(tools):
            cells = []
            for r, v, d in zip(runs, entry[tool]["rounds"], entry[tool]["disturbed"]):
                cells.append(_fmt(v) + ("*" if d else ""))
            lines.append([label if i == 0 else "", unit if i == 0 else "", tool] + cells +
                         [_fmt(entry[tool]["median"]),
                          (f"{ratio:.2f}" if ratio is not None else "") if i == 0 else "",
                          better if i == 0 else ""])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    out = sys.stdout
    out.write("  ".join(h.ljust(w) for h, w in zip(head, widths)) + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for line in lines:
        out.write("  ".join(str(c).ljust(w) for c, w in zip(line, widths)) + "\n")
    copy = doc["metrics"]["copy_s"]
    extra = doc["metrics"]["a_rss_extra_mib"]["berth"]["median"]
    out.write("\n")
    if copy["ratio_berth_over_skopeo"] is not None:
        out.write(f"copy time berth/skopeo (medians): {copy['ratio_berth_over_skopeo']:.2f}"
                  f"  (target <= 1.2)\n")
    if extra is not None:
        out.write(f"extra RSS of A during berth replication (median): {extra:.1f} MiB"
                  f"  (target <= 64 MiB)\n")
    anon = doc["metrics"]["a_anon_extra_mib"]["berth"]["median"]
    mapped = doc["metrics"]["a_file_extra_mib"]["berth"]["median"]
    if anon is not None and mapped is not None:
        out.write(f"  of which private (RssAnon): {anon:.1f} MiB; file pages mapped (RssFile): "
                  f"{mapped:.1f} MiB\n")
    if doc["disturbed_runs"]:
        out.write(f"* = the host was more than {busy_limit:.0f}% busy during the second before that run "
                  "(other load: treat as noise)\n")
    out.write(f"results: {json_path}\n")


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd = argv[1]
    if cmd == "make-layout" and len(argv) == 4:
        make_layout(argv[2], int(argv[3]))
    elif cmd == "sample-rss" and len(argv) == 5:
        sample_rss(int(argv[2]), float(argv[3]), argv[4])
    elif cmd == "report" and len(argv) == 5:
        report(argv[2], argv[3], argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
