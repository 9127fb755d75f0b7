//! Garbage collection on embedded storage, in-process (no HTTP): what a run costs on a
//! registry of 10,000 manifests and about 50,000 blobs of which 1 % is garbage, and what
//! running it continuously costs concurrent pushes. The figures are reported, never
//! asserted. Run with `cargo run --release -p berth-store-local --example gc`; the knobs are
//! environment variables (see `bench/README.md` or the `Knobs` below).
//!
//! **Part 1.** Populates a registry through the `Registry` (uploads with `upload_whole`,
//! shared base layers mounted, manifests put with a tag), settles it with one run (every
//! upload makes its blob a candidate, so the first run after populating visits every blob),
//! deletes whole groups of manifests so that about 1 % of the blobs lose their last
//! reference, then runs the `Collector` (grace 0) as a dry run, a real run and a second real
//! run. The `Collector` gets counting wrappers around the `GarbageIndex` and the
//! `BlobStore`, so every store call a run makes is counted (and timed) per method.
//!
//! **Part 2.** `GC_PUSHERS` tasks push small images (a config, a layer of their own and one
//! base layer shared by all) for `GC_PUSH_SECONDS` while another task deletes every second
//! image a little later; with GC on, a further task runs the `Collector` in a loop
//! (grace `GC_PUSH_GRACE_MS`, 2 hours by default). Rounds alternate the order of "GC off"
//! and "GC on", each phase on a fresh data dir, and the medians of images/s are compared.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use berth_core::gc::{BlobRecord, Claim, Collector, GarbageIndex, GcOptions, GcProgress, now_ms};
use berth_core::ports::{BlobStore, ByteStream, StagedUpload};
use berth_core::registry::UploadStart;
use berth_core::{
    Actor, Algorithm, Digest, EntryPoint, Reference, Registry, RepositoryName, RequestContext,
    Result, UploadId,
};
use berth_store_local::{FsBlobStore, RedbMetadataStore};
use bytes::Bytes;
use serde_json::{Value, json};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The knobs, from environment variables.
#[derive(Debug, Clone)]
struct Knobs {
    /// `GC_PARTS`: which parts run, `1`, `2` or `1,2`.
    parts: String,
    /// `GC_BENCH_DIR`: where the data dirs go (the system's temp dir by default).
    dir: Option<PathBuf>,
    /// `GC_BENCH_JSON`: a file to write the results to as JSON.
    json: Option<PathBuf>,
    /// `GC_BUDGET`: candidates a `Collector` step visits (`berth serve` uses 500).
    budget: usize,
    // Part 1.
    /// `GC_MANIFESTS`.
    manifests: usize,
    /// `GC_REPOS`.
    repos: usize,
    /// `GC_UNIQUE_LAYERS`: layers of a manifest's own, besides its config.
    unique_layers: usize,
    /// `GC_GROUP`: consecutive manifests of a repository sharing one "runtime" layer.
    group: usize,
    /// `GC_BASES`: base layers, each shared by every `GC_BASES`-th repository.
    bases: usize,
    /// `GC_BLOB_BYTES`: size of every layer and (about) every config.
    blob_bytes: usize,
    /// `GC_GARBAGE_PCT`: share of the blobs to turn into garbage.
    garbage_pct: f64,
    /// `GC_POPULATE_TASKS`: repositories populated at once.
    populate_tasks: usize,
    /// `GC_SETTLE`: run the collector once after populating (see part 1 above).
    settle: bool,
    // Part 2.
    /// `GC_ROUNDS`.
    rounds: usize,
    /// `GC_PUSHERS`.
    pushers: usize,
    /// `GC_PUSH_SECONDS`: length of each phase.
    push_seconds: f64,
    /// `GC_PUSH_GRACE_MS`: the grace of the runs during pushes.
    push_grace_ms: u64,
    /// `GC_DELETE_EVERY`: the deleter deletes every n-th image pushed (0: none).
    delete_every: usize,
    /// `GC_DELETE_LAG`: ... once this many later images were queued for deletion.
    delete_lag: usize,
    /// `GC_LOOP_PAUSE_MS`: pause between two runs of the GC loop (0: back to back).
    loop_pause_ms: u64,
    /// `GC_BUSY_LIMIT`: % of the machine other processes may use before a phase is marked.
    busy_limit_pct: f64,
    /// `GC_IDLE_WAIT`: seconds to wait at most, before a phase, for the machine to be idle.
    idle_wait: f64,
}

impl Knobs {
    fn from_env() -> Self {
        Self {
            parts: std::env::var("GC_PARTS").unwrap_or_else(|_| "1,2".to_owned()),
            dir: std::env::var_os("GC_BENCH_DIR").map(PathBuf::from),
            json: std::env::var_os("GC_BENCH_JSON").map(PathBuf::from),
            budget: knob("GC_BUDGET", 500),
            manifests: knob("GC_MANIFESTS", 10_000),
            repos: knob("GC_REPOS", 100),
            unique_layers: knob("GC_UNIQUE_LAYERS", 4),
            group: knob("GC_GROUP", 10),
            bases: knob("GC_BASES", 10),
            blob_bytes: knob("GC_BLOB_BYTES", 256),
            garbage_pct: knob("GC_GARBAGE_PCT", 1.0),
            populate_tasks: knob("GC_POPULATE_TASKS", 8),
            settle: knob("GC_SETTLE", 1) != 0,
            rounds: knob("GC_ROUNDS", 5),
            pushers: knob("GC_PUSHERS", 8),
            push_seconds: knob("GC_PUSH_SECONDS", 10.0),
            push_grace_ms: knob("GC_PUSH_GRACE_MS", 2 * 3600 * 1000),
            delete_every: knob("GC_DELETE_EVERY", 2),
            delete_lag: knob("GC_DELETE_LAG", 64),
            loop_pause_ms: knob("GC_LOOP_PAUSE_MS", 0),
            busy_limit_pct: knob("GC_BUSY_LIMIT", 10.0),
            idle_wait: knob("GC_IDLE_WAIT", 0.0),
        }
    }

    fn part(&self, part: &str) -> bool {
        self.parts.split(',').any(|p| p.trim() == part)
    }

    fn tempdir(&self) -> tempfile::TempDir {
        match &self.dir {
            Some(dir) => tempfile::tempdir_in(dir),
            None => tempfile::tempdir(),
        }
        .expect("a temporary data dir")
    }
}

fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a valid value")),
        Err(_) => default,
    }
}

#[tokio::main]
async fn main() {
    let knobs = Knobs::from_env();
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    println!("gc benchmark: {knobs:?}");
    println!(
        "machine: {cpus} CPUs, load average {}",
        load_average().unwrap_or_else(|| "unknown".to_owned())
    );
    let mut report = json!({ "knobs": format!("{knobs:?}"), "cpus": cpus });
    let collection = if knobs.part("1") {
        let result = collection(&knobs).await;
        report["collection"] = result.json();
        Some(result)
    } else {
        None
    };
    let pushes = if knobs.part("2") {
        let result = pushes(&knobs).await;
        report["pushes"] = result.json();
        Some(result)
    } else {
        None
    };

    println!("\n==================== summary ====================");
    if let Some(result) = &collection {
        result.print_summary();
    }
    if let Some(result) = &pushes {
        result.print_summary(&knobs);
    }
    if let Some(path) = &knobs.json {
        let text = serde_json::to_string_pretty(&report).expect("the report as JSON");
        std::fs::write(path, text).expect("writing GC_BENCH_JSON");
        println!("\nJSON written to {}", path.display());
    }
}

// ---------------------------------------------------------------------------------------
// Counting wrappers
// ---------------------------------------------------------------------------------------

/// Calls and time per store method.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Tally {
    calls: u64,
    seconds: f64,
}

type Tallies = BTreeMap<&'static str, Tally>;

#[derive(Debug, Default)]
struct Calls(Mutex<Tallies>);

impl Calls {
    async fn time<T>(&self, method: &'static str, call: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let outcome = call.await;
        let seconds = started.elapsed().as_secs_f64();
        let mut tallies = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let tally = tallies.entry(method).or_default();
        tally.calls += 1;
        tally.seconds += seconds;
        outcome
    }

    fn snapshot(&self) -> Tallies {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// What was counted since `before` (a snapshot).
    fn since(&self, before: &Tallies) -> Tallies {
        self.snapshot()
            .into_iter()
            .map(|(method, now)| {
                let then = before.get(method).copied().unwrap_or_default();
                let delta = Tally {
                    calls: now.calls - then.calls,
                    seconds: now.seconds - then.seconds,
                };
                (method, delta)
            })
            .filter(|(_, delta)| delta.calls > 0)
            .collect()
    }
}

fn total_calls(tallies: &Tallies) -> u64 {
    tallies.values().map(|t| t.calls).sum()
}

fn tallies_json(tallies: &Tallies) -> Value {
    tallies
        .iter()
        .map(|(method, t)| {
            (
                (*method).to_owned(),
                json!({ "calls": t.calls, "seconds": t.seconds }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn tallies_line(tallies: &Tallies) -> String {
    if tallies.is_empty() {
        return "none".to_owned();
    }
    tallies
        .iter()
        .map(|(method, t)| format!("{method} {} ({:.3} s)", t.calls, t.seconds))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A `GarbageIndex` that counts every call and hands it on.
struct CountingIndex {
    inner: Arc<dyn GarbageIndex>,
    calls: Arc<Calls>,
}

#[async_trait]
impl GarbageIndex for CountingIndex {
    async fn claim_blob(&self, digest: &Digest, size: u64, now_ms: u64) -> Result<Claim> {
        let call = self.inner.claim_blob(digest, size, now_ms);
        self.calls.time("index.claim_blob", call).await
    }

    async fn blob_record(&self, digest: &Digest) -> Result<Option<BlobRecord>> {
        let call = self.inner.blob_record(digest);
        self.calls.time("index.blob_record", call).await
    }

    async fn candidates(&self, after: Option<&str>, limit: usize) -> Result<Vec<Digest>> {
        let call = self.inner.candidates(after, limit);
        self.calls.time("index.candidates", call).await
    }

    async fn drop_candidates(&self, digests: &[Digest]) -> Result<()> {
        let call = self.inner.drop_candidates(digests);
        self.calls.time("index.drop_candidates", call).await
    }

    async fn blob_records(&self, digests: &[Digest]) -> Result<Vec<Option<BlobRecord>>> {
        let call = self.inner.blob_records(digests);
        self.calls.time("index.blob_records", call).await
    }

    async fn begin_collect(&self, digests: &[Digest], cutoff_ms: u64) -> Result<Vec<BlobRecord>> {
        let call = self.inner.begin_collect(digests, cutoff_ms);
        self.calls.time("index.begin_collect", call).await
    }

    async fn end_collect(&self, records: &[BlobRecord], now_ms: u64) -> Result<()> {
        let call = self.inner.end_collect(records, now_ms);
        self.calls.time("index.end_collect", call).await
    }

    async fn stored_bytes(&self) -> Result<u64> {
        let call = self.inner.stored_bytes();
        self.calls.time("index.stored_bytes", call).await
    }

    async fn references_counted(&self) -> Result<bool> {
        let call = self.inner.references_counted();
        self.calls.time("index.references_counted", call).await
    }

    async fn forget_collected(&self, digest: &Digest, before_ms: u64) -> Result<()> {
        let call = self.inner.forget_collected(digest, before_ms);
        self.calls.time("index.forget_collected", call).await
    }
}

/// A `BlobStore` that counts every call and hands it on.
struct CountingBlobs {
    inner: Arc<dyn BlobStore>,
    calls: Arc<Calls>,
}

#[async_trait]
impl BlobStore for CountingBlobs {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        self.calls.time("blobs.stat", self.inner.stat(digest)).await
    }

    async fn read(
        &self,
        digest: &Digest,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<ByteStream> {
        self.calls
            .time("blobs.read", self.inner.read(digest, range))
            .await
    }

    async fn redirect_url(&self, digest: &Digest) -> Result<Option<String>> {
        let call = self.inner.redirect_url(digest);
        self.calls.time("blobs.redirect_url", call).await
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        self.calls
            .time("blobs.delete", self.inner.delete(digest))
            .await
    }

    async fn begin_upload(&self, id: &UploadId) -> Result<Vec<u8>> {
        let call = self.inner.begin_upload(id);
        self.calls.time("blobs.begin_upload", call).await
    }

    async fn append(&self, staged: &StagedUpload, body: ByteStream) -> Result<(u64, Vec<u8>)> {
        let call = self.inner.append(staged, body);
        self.calls.time("blobs.append", call).await
    }

    async fn read_staged(&self, staged: &StagedUpload) -> Result<ByteStream> {
        let call = self.inner.read_staged(staged);
        self.calls.time("blobs.read_staged", call).await
    }

    async fn commit(&self, staged: &StagedUpload, digest: &Digest) -> Result<()> {
        let call = self.inner.commit(staged, digest);
        self.calls.time("blobs.commit", call).await
    }

    async fn abort(&self, staged: &StagedUpload) -> Result<()> {
        self.calls
            .time("blobs.abort", self.inner.abort(staged))
            .await
    }
}

// ---------------------------------------------------------------------------------------
// One registry on a data dir
// ---------------------------------------------------------------------------------------

struct Setup {
    _dir: tempfile::TempDir,
    data_dir: PathBuf,
    registry: Arc<Registry>,
    /// The index itself, without counting.
    index: Arc<dyn GarbageIndex>,
    /// A collector whose index and blob store count their calls in `calls`.
    collector: Arc<Collector>,
    calls: Arc<Calls>,
}

fn setup(knobs: &Knobs) -> Setup {
    let dir = knobs.tempdir();
    let data_dir = dir.path().to_path_buf();
    let (blobs, meta) = berth_store_local::open_data_dir(&data_dir).expect("opening a data dir");
    let (blobs, meta): (Arc<FsBlobStore>, Arc<RedbMetadataStore>) =
        (Arc::new(blobs), Arc::new(meta));
    let registry = Registry::new(blobs.clone(), meta.clone()).with_garbage_index(meta.clone());
    let calls = Arc::new(Calls::default());
    let index: Arc<dyn GarbageIndex> = meta.clone();
    let counted_index = CountingIndex {
        inner: index.clone(),
        calls: calls.clone(),
    };
    let counted_blobs = CountingBlobs {
        inner: blobs,
        calls: calls.clone(),
    };
    let collector = Collector::new(meta, Arc::new(counted_index), Arc::new(counted_blobs));
    Setup {
        _dir: dir,
        data_dir,
        registry: Arc::new(registry),
        index,
        collector: Arc::new(collector),
        calls,
    }
}

fn context() -> RequestContext {
    RequestContext::new(
        Actor::User("bench".to_owned()),
        "gc-bench",
        "127.0.0.1",
        EntryPoint::Registry,
    )
}

/// `size` bytes starting with `label`: distinct labels give distinct blobs.
fn blob(label: &str, size: usize) -> Bytes {
    let mut bytes = label.as_bytes().to_vec();
    bytes.resize(size.max(bytes.len()), b'.');
    Bytes::from(bytes)
}

/// An image config of about `size` bytes.
fn config(label: &str, size: usize) -> Bytes {
    let mut doc = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Labels": { "bench": label } },
        "rootfs": { "type": "layers", "diff_ids": [] },
    });
    // `,"pad":""` adds 9 bytes.
    let pad = size.saturating_sub(doc.to_string().len() + 9);
    doc["pad"] = json!(".".repeat(pad));
    Bytes::from(doc.to_string())
}

fn sha256(bytes: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, bytes)
}

fn descriptor(media_type: &str, bytes: &Bytes) -> Value {
    json!({
        "mediaType": media_type,
        "digest": sha256(bytes).to_string(),
        "size": bytes.len(),
    })
}

fn image_manifest(config: &Bytes, layers: &[&Bytes]) -> Bytes {
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": layers.iter().map(|l| descriptor(OCI_LAYER, l)).collect::<Vec<_>>(),
    });
    Bytes::from(doc.to_string())
}

async fn upload(registry: &Registry, repository: &RepositoryName, bytes: &Bytes) -> Result<Digest> {
    let digest = sha256(bytes);
    let chunk = Ok::<_, std::io::Error>(bytes.clone());
    let body: ByteStream = Box::pin(futures_util::stream::iter([chunk]));
    registry
        .upload_whole(&context(), repository, &digest, body)
        .await?;
    Ok(digest)
}

/// Puts an image manifest under `tag`; its blobs must be in the repository.
async fn put_image(
    registry: &Registry,
    repository: &RepositoryName,
    tag: &str,
    manifest: Bytes,
) -> Result<Digest> {
    let reference: Reference = tag.parse()?;
    let record = registry
        .put_manifest(
            &context(),
            repository,
            &reference,
            Some(OCI_MANIFEST),
            manifest,
        )
        .await?;
    Ok(record.digest)
}

/// The number of blob files in a data dir.
fn count_blob_files(data_dir: &Path) -> usize {
    fn walk(dir: &Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .flatten()
                .map(|entry| match entry.file_type() {
                    Ok(kind) if kind.is_dir() => walk(&entry.path()),
                    Ok(_) => 1,
                    Err(_) => 0,
                })
                .sum()
        })
    }
    walk(&data_dir.join("blobs"))
}

/// Seconds as a short string.
fn secs(seconds: f64) -> String {
    if seconds >= 10.0 {
        format!("{seconds:.1} s")
    } else if seconds >= 0.1 {
        format!("{seconds:.2} s")
    } else {
        format!("{:.1} ms", seconds * 1000.0)
    }
}

// ---------------------------------------------------------------------------------------
// Part 1: a run on a large registry with 1 % garbage
// ---------------------------------------------------------------------------------------

/// One collector run: what it did, what it took, and the store calls it made.
#[derive(Debug, Clone)]
struct RunResult {
    seconds: f64,
    blobs_deleted: u64,
    bytes_freed: u64,
    calls: Tallies,
}

impl RunResult {
    fn json(&self) -> Value {
        json!({
            "seconds": self.seconds,
            "blobs_deleted": self.blobs_deleted,
            "bytes_freed": self.bytes_freed,
            "store_calls": total_calls(&self.calls),
            "calls": tallies_json(&self.calls),
        })
    }

    fn line(&self, verb: &str) -> String {
        format!(
            "{} — {verb} {} blobs ({} bytes); {} store calls: {}",
            secs(self.seconds),
            self.blobs_deleted,
            self.bytes_freed,
            total_calls(&self.calls),
            tallies_line(&self.calls)
        )
    }
}

async fn timed_run(setup: &Setup, options: GcOptions, budget: usize) -> RunResult {
    let before = setup.calls.snapshot();
    let mut progress = GcProgress::new(options, now_ms());
    let started = Instant::now();
    setup
        .collector
        .run(&mut progress, budget)
        .await
        .expect("a collector run");
    RunResult {
        seconds: started.elapsed().as_secs_f64(),
        blobs_deleted: progress.blobs_deleted,
        bytes_freed: progress.bytes_freed,
        calls: setup.calls.since(&before),
    }
}

/// How the part 1 registry is laid out.
#[derive(Debug, Clone, Copy)]
struct Layout {
    repos: usize,
    manifests: usize,
    unique_layers: usize,
    group: usize,
    bases: usize,
    blob_bytes: usize,
}

impl Layout {
    /// Manifests in repository `r`.
    fn manifests_in(&self, r: usize) -> usize {
        self.manifests / self.repos + usize::from(r < self.manifests % self.repos)
    }

    /// Runtime layers (groups) in repository `r`.
    fn groups_in(&self, r: usize) -> usize {
        self.manifests_in(r).div_ceil(self.group)
    }

    fn distinct_blobs(&self) -> usize {
        let groups: usize = (0..self.repos).map(|r| self.groups_in(r)).sum();
        self.manifests * (1 + self.unique_layers) + groups + self.bases.min(self.repos)
    }

    fn repository(r: usize) -> RepositoryName {
        format!("bench/app{r:03}")
            .parse()
            .expect("a repository name")
    }

    fn base(&self, b: usize) -> Bytes {
        blob(&format!("base layer {b}"), self.blob_bytes)
    }

    /// Pushes repository `r`, its base layer mounted from the repository that uploaded it.
    /// Returns the digests of its manifests, in order.
    async fn push_repository(
        &self,
        registry: &Registry,
        r: usize,
        done: &AtomicU64,
    ) -> Result<Vec<Digest>> {
        let repository = Self::repository(r);
        let b = r % self.bases;
        let base = self.base(b);
        if b != r {
            let from = Self::repository(b);
            let mounted = registry
                .start_upload(
                    &context(),
                    &repository,
                    Some((&sha256(&base), std::slice::from_ref(&from))),
                )
                .await?;
            assert!(
                matches!(mounted, UploadStart::Mounted(_)),
                "the base layer should mount from {from}"
            );
        }
        let mut runtime = Bytes::new();
        let mut digests = Vec::new();
        for k in 0..self.manifests_in(r) {
            if k % self.group == 0 {
                runtime = blob(
                    &format!("runtime layer {r} {}", k / self.group),
                    self.blob_bytes,
                );
                upload(registry, &repository, &runtime).await?;
            }
            let config = config(&format!("config {r} {k}"), self.blob_bytes);
            upload(registry, &repository, &config).await?;
            let mut own = Vec::new();
            for i in 0..self.unique_layers {
                let layer = blob(&format!("layer {r} {k} {i}"), self.blob_bytes);
                upload(registry, &repository, &layer).await?;
                own.push(layer);
            }
            let mut layers = vec![&base, &runtime];
            layers.extend(own.iter());
            let manifest = image_manifest(&config, &layers);
            digests.push(put_image(registry, &repository, &format!("v{k}"), manifest).await?);
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_multiple_of(1000) {
                println!("  {n} manifests");
            }
        }
        Ok(digests)
    }
}

#[derive(Debug)]
struct CollectionResult {
    layout: Layout,
    populate_seconds: f64,
    blob_files: usize,
    candidates_after_populate: usize,
    settle: Option<RunResult>,
    manifests_deleted: usize,
    delete_seconds: f64,
    expected_garbage: usize,
    dry: RunResult,
    real: RunResult,
    second: RunResult,
    blob_files_after: usize,
}

impl CollectionResult {
    fn dry_equals_real(&self) -> bool {
        self.dry.blobs_deleted == self.real.blobs_deleted
            && self.dry.bytes_freed == self.real.bytes_freed
    }

    fn per_blob(&self) -> Vec<(&'static str, f64)> {
        let freed = self.real.blobs_deleted.max(1) as f64;
        self.real
            .calls
            .iter()
            .map(|(method, t)| (*method, t.calls as f64 / freed))
            .collect()
    }

    fn json(&self) -> Value {
        let per_blob: serde_json::Map<_, _> = self
            .per_blob()
            .into_iter()
            .map(|(method, n)| (method.to_owned(), json!(n)))
            .collect();
        json!({
            "repositories": self.layout.repos,
            "manifests": self.layout.manifests,
            "distinct_blobs": self.layout.distinct_blobs(),
            "blob_files": self.blob_files,
            "blob_bytes": self.layout.blob_bytes,
            "populate_seconds": self.populate_seconds,
            "candidates_after_populate": self.candidates_after_populate,
            "settle_run": self.settle.as_ref().map(RunResult::json),
            "manifests_deleted": self.manifests_deleted,
            "delete_seconds": self.delete_seconds,
            "expected_garbage_blobs": self.expected_garbage,
            "dry_run": self.dry.json(),
            "real_run": self.real.json(),
            "second_run": self.second.json(),
            "dry_equals_real": self.dry_equals_real(),
            "store_calls_per_blob_freed": total_calls(&self.real.calls) as f64
                / self.real.blobs_deleted.max(1) as f64,
            "calls_per_blob_freed": per_blob,
            "blob_files_after": self.blob_files_after,
        })
    }

    fn print_summary(&self) {
        let l = &self.layout;
        let freed = self.real.blobs_deleted;
        println!(
            "\nPart 1: GC on {} manifests in {} repositories, {} blobs ({} bytes each), {} garbage \
             ({:.2} %), grace 0",
            l.manifests,
            l.repos,
            l.distinct_blobs(),
            l.blob_bytes,
            self.expected_garbage,
            100.0 * self.expected_garbage as f64 / l.distinct_blobs() as f64
        );
        println!("| figure | value |");
        println!("| --- | --- |");
        println!(
            "| population (not the figure) | {} ({:.0} manifests/s), {} blob files, {} candidates |",
            secs(self.populate_seconds),
            l.manifests as f64 / self.populate_seconds,
            self.blob_files,
            self.candidates_after_populate
        );
        if let Some(settle) = &self.settle {
            println!(
                "| settling run (visits every uploaded blob) | {} |",
                settle.line("freed")
            );
        }
        println!(
            "| deleting {} manifests | {} |",
            self.manifests_deleted,
            secs(self.delete_seconds)
        );
        println!("| dry run | {} |", self.dry.line("would free"));
        println!("| **real run** | **{}** |", self.real.line("freed"));
        println!(
            "| dry run == real run | {} (dry {} blobs / {} bytes, real {} / {}, expected {}) |",
            if self.dry_equals_real() { "yes" } else { "NO" },
            self.dry.blobs_deleted,
            self.dry.bytes_freed,
            self.real.blobs_deleted,
            self.real.bytes_freed,
            self.expected_garbage
        );
        let per_blob = self
            .per_blob()
            .iter()
            .map(|(method, n)| format!("{method} {n:.3}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "| **store calls per blob freed** | **{:.3}**: {per_blob} |",
            total_calls(&self.real.calls) as f64 / freed.max(1) as f64
        );
        println!(
            "| time per blob freed | {:.3} ms |",
            self.real.seconds * 1000.0 / freed.max(1) as f64
        );
        println!(
            "| second run, nothing changed | {} |",
            self.second.line("freed")
        );
        println!(
            "| blob files before / after | {} / {} (difference {}) |",
            self.blob_files,
            self.blob_files_after,
            self.blob_files.saturating_sub(self.blob_files_after)
        );
    }
}

async fn collection(knobs: &Knobs) -> CollectionResult {
    let layout = Layout {
        repos: knobs.repos.max(1),
        manifests: knobs.manifests,
        unique_layers: knobs.unique_layers,
        group: knobs.group.max(1),
        bases: knobs.bases.clamp(1, knobs.repos.max(1)),
        blob_bytes: knobs.blob_bytes,
    };
    println!(
        "\n=== part 1: {} manifests in {} repositories, {} distinct blobs ===",
        layout.manifests,
        layout.repos,
        layout.distinct_blobs()
    );
    let setup = setup(knobs);
    println!("data dir {}", setup.data_dir.display());

    // Populate: the base layers first (each in the first repository using it), then the
    // repositories, `populate_tasks` at a time.
    let started = Instant::now();
    for b in 0..layout.bases {
        upload(&setup.registry, &Layout::repository(b), &layout.base(b))
            .await
            .expect("uploading a base layer");
    }
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..knobs.populate_tasks.max(1))
        .map(|t| {
            let (registry, done) = (setup.registry.clone(), done.clone());
            let step = knobs.populate_tasks.max(1);
            tokio::spawn(async move {
                let mut pushed = Vec::new();
                for r in (t..layout.repos).step_by(step) {
                    let digests = layout
                        .push_repository(&registry, r, &done)
                        .await
                        .expect("populating a repository");
                    pushed.push((r, digests));
                }
                pushed
            })
        })
        .collect();
    let mut manifests: BTreeMap<usize, Vec<Digest>> = BTreeMap::new();
    for task in tasks {
        manifests.extend(task.await.expect("a populating task"));
    }
    let populate_seconds = started.elapsed().as_secs_f64();
    let blob_files = count_blob_files(&setup.data_dir);
    let candidates_after_populate = count_candidates(&setup).await;
    println!(
        "populated in {} ({blob_files} blob files, {candidates_after_populate} candidates)",
        secs(populate_seconds)
    );

    let grace_0 = GcOptions {
        dry_run: false,
        delete_untagged: false,
        grace_ms: 0,
    };
    // Every upload made its blob a candidate: the first run visits them all. A registry
    // that collects regularly has done that work in earlier runs.
    let settle = if knobs.settle {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let run = timed_run(&setup, grace_0, knobs.budget).await;
        println!("settling run: {}", run.line("freed"));
        Some(run)
    } else {
        None
    };

    // Garbage: whole groups (the manifests sharing a runtime layer), so that each frees its
    // manifests' configs and own layers and the runtime layer; spread over repositories.
    let per_group = layout.group * (1 + layout.unique_layers) + 1;
    let wanted = knobs.garbage_pct / 100.0 * layout.distinct_blobs() as f64;
    let groups = ((wanted / per_group as f64).round() as usize).max(1);
    let mut doomed = Vec::new();
    let mut expected_garbage = 0;
    for j in 0..groups {
        let (r, g) = (j % layout.repos, j / layout.repos);
        if g >= layout.groups_in(r) {
            continue;
        }
        let end = ((g + 1) * layout.group).min(layout.manifests_in(r));
        let members = &manifests[&r][g * layout.group..end];
        expected_garbage += members.len() * (1 + layout.unique_layers) + 1;
        doomed.extend(members.iter().map(|d| (r, d.clone())));
    }
    let started = Instant::now();
    for (r, digest) in &doomed {
        setup
            .registry
            .delete_manifest(
                &context(),
                &Layout::repository(*r),
                &Reference::Digest(digest.clone()),
            )
            .await
            .expect("deleting a manifest");
    }
    let delete_seconds = started.elapsed().as_secs_f64();
    println!(
        "deleted {} manifests ({groups} groups) in {}: {expected_garbage} blobs lost their last \
         reference",
        doomed.len(),
        secs(delete_seconds)
    );
    // Grace 0: the cutoff is the run's start; a blob touched in the same millisecond stays.
    tokio::time::sleep(Duration::from_millis(2)).await;

    let dry = timed_run(
        &setup,
        GcOptions {
            dry_run: true,
            ..grace_0
        },
        knobs.budget,
    )
    .await;
    println!("dry run: {}", dry.line("would free"));
    let real = timed_run(&setup, grace_0, knobs.budget).await;
    println!("real run: {}", real.line("freed"));
    let second = timed_run(&setup, grace_0, knobs.budget).await;
    println!("second run: {}", second.line("freed"));
    let blob_files_after = count_blob_files(&setup.data_dir);

    CollectionResult {
        layout,
        populate_seconds,
        blob_files,
        candidates_after_populate,
        settle,
        manifests_deleted: doomed.len(),
        delete_seconds,
        expected_garbage,
        dry,
        real,
        second,
        blob_files_after,
    }
}

/// All candidates, read from the index itself (not counted).
async fn count_candidates(setup: &Setup) -> usize {
    let mut after: Option<String> = None;
    let mut count = 0;
    loop {
        let page = setup
            .index
            .candidates(after.as_deref(), 10_000)
            .await
            .expect("listing candidates");
        count += page.len();
        match page.last() {
            Some(last) if page.len() == 10_000 => after = Some(last.to_string()),
            _ => return count,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Part 2: push throughput while GC runs
// ---------------------------------------------------------------------------------------

/// One phase of part 2.
#[derive(Debug, Clone)]
struct Phase {
    round: usize,
    gc: bool,
    seconds: f64,
    images: u64,
    push_errors: u64,
    gc_errors: u64,
    first_error: Option<String>,
    deletions: u64,
    gc_runs: u64,
    gc_freed: u64,
    gc_calls: Tallies,
    /// Share of the machine busy during the second before the phase.
    busy_before: Option<f64>,
    own_cpu_seconds: Option<f64>,
    host_busy_seconds: Option<f64>,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.images as f64 / self.seconds
    }

    /// CPU used during the phase by this process, in cores.
    fn own_cores(&self) -> Option<f64> {
        Some(self.own_cpu_seconds? / self.seconds)
    }

    /// CPU used during the phase by other processes, in cores.
    fn other_cores(&self) -> Option<f64> {
        Some((self.host_busy_seconds? - self.own_cpu_seconds?).max(0.0) / self.seconds)
    }

    /// Whether other processes used more than `limit` cores during the phase.
    fn disturbed(&self, limit: f64) -> bool {
        self.other_cores().is_some_and(|cores| cores > limit)
    }

    fn json(&self, limit: f64) -> Value {
        json!({
            "round": self.round,
            "gc": self.gc,
            "seconds": self.seconds,
            "images": self.images,
            "images_per_second": self.rate(),
            "push_errors": self.push_errors,
            "gc_errors": self.gc_errors,
            "first_error": self.first_error,
            "deletions": self.deletions,
            "gc_runs": self.gc_runs,
            "gc_blobs_freed": self.gc_freed,
            "gc_store_calls": total_calls(&self.gc_calls),
            "gc_calls": tallies_json(&self.gc_calls),
            "busy_before": self.busy_before,
            "own_cpu_seconds": self.own_cpu_seconds,
            "host_busy_seconds": self.host_busy_seconds,
            "own_cpu_cores": self.own_cores(),
            "other_cpu_cores": self.other_cores(),
            "disturbed": self.disturbed(limit),
        })
    }
}

#[derive(Debug)]
struct PushResult {
    phases: Vec<Phase>,
    /// Other processes' CPU, in cores, above which a phase counts as disturbed.
    busy_limit: f64,
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[n / 2]),
        n => Some(f64::midpoint(values[n / 2 - 1], values[n / 2])),
    }
}

fn figure(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

impl PushResult {
    /// Median images/s with GC off and on, of every phase or only undisturbed ones.
    fn medians(&self, undisturbed_only: bool) -> (Option<f64>, Option<f64>) {
        let rates = |gc: bool| {
            self.phases
                .iter()
                .filter(|p| p.gc == gc && !(undisturbed_only && p.disturbed(self.busy_limit)))
                .map(Phase::rate)
                .collect::<Vec<_>>()
        };
        (median(rates(false)), median(rates(true)))
    }

    fn round(&self, round: usize) -> (Option<&Phase>, Option<&Phase>) {
        let find = |gc: bool| self.phases.iter().find(|p| p.round == round && p.gc == gc);
        (find(false), find(true))
    }

    /// GC on / GC off within each round.
    fn round_ratios(&self) -> Vec<f64> {
        let rounds = self.phases.iter().map(|p| p.round).max().unwrap_or(0);
        (1..=rounds)
            .filter_map(|round| match self.round(round) {
                (Some(off), Some(on)) => Some(on.rate() / off.rate()),
                _ => None,
            })
            .collect()
    }

    fn ratio(&self, undisturbed_only: bool) -> Option<f64> {
        match self.medians(undisturbed_only) {
            (Some(off), Some(on)) => Some(on / off),
            _ => None,
        }
    }

    fn json(&self) -> Value {
        let (off, on) = self.medians(false);
        let (quiet_off, quiet_on) = self.medians(true);
        json!({
            "data_dir": "fresh per phase",
            "busy_limit_cores": self.busy_limit,
            "phases": self.phases.iter().map(|p| p.json(self.busy_limit)).collect::<Vec<_>>(),
            "median_images_per_second_gc_off": off,
            "median_images_per_second_gc_on": on,
            "ratio_on_over_off": self.ratio(false),
            "median_of_round_ratios": median(self.round_ratios()),
            "undisturbed_median_gc_off": quiet_off,
            "undisturbed_median_gc_on": quiet_on,
            "undisturbed_ratio_on_over_off": self.ratio(true),
        })
    }

    fn print_summary(&self, knobs: &Knobs) {
        println!(
            "\nPart 2: push throughput, {} pushers, {} s per phase, {} rounds, fresh data dir per \
             phase, GC loop grace {} ms, pause {} ms between runs, the deleter deletes every {} \
             image(s)",
            knobs.pushers,
            knobs.push_seconds,
            knobs.rounds,
            knobs.push_grace_ms,
            knobs.loop_pause_ms,
            knobs.delete_every
        );
        println!(
            "| round | GC off images/s | GC on images/s | on/off | GC runs | GC store calls | GC \
             freed | other CPU off / on (cores) |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
        let cores = |p: Option<&Phase>| figure(p.and_then(Phase::other_cores), 2);
        let rate = |p: Option<&Phase>| {
            p.map_or_else(
                || "-".to_owned(),
                |p| {
                    let mark = if p.disturbed(self.busy_limit) {
                        "*"
                    } else {
                        ""
                    };
                    format!("{:.1}{mark}", p.rate())
                },
            )
        };
        for round in 1..=knobs.rounds {
            let (off, on) = self.round(round);
            let ratio = match (off, on) {
                (Some(off), Some(on)) => Some(on.rate() / off.rate()),
                _ => None,
            };
            println!(
                "| {round} | {} | {} | {} | {} | {} | {} | {} / {} |",
                rate(off),
                rate(on),
                figure(ratio, 3),
                on.map_or(0, |p| p.gc_runs),
                on.map_or(0, |p| total_calls(&p.gc_calls)),
                on.map_or(0, |p| p.gc_freed),
                cores(off),
                cores(on)
            );
        }
        let (off, on) = self.medians(false);
        println!(
            "| **median** | **{}** | **{}** | **{}** | | | | |",
            figure(off, 1),
            figure(on, 1),
            figure(self.ratio(false), 3)
        );
        println!(
            "\n**GC on / GC off = {}** (ratio of the medians; target ≥ 0.9). Median of the \
             per-round ratios: {}.",
            figure(self.ratio(false), 3),
            figure(median(self.round_ratios()), 3)
        );
        let (quiet_off, quiet_on) = self.medians(true);
        println!(
            "`*`: other processes used more than {:.2} cores during the phase. Undisturbed \
             phases only: off {} / on {} images/s, ratio {}.",
            self.busy_limit,
            figure(quiet_off, 1),
            figure(quiet_on, 1),
            figure(self.ratio(true), 3)
        );
        let push_errors: u64 = self.phases.iter().map(|p| p.push_errors).sum();
        let gc_errors: u64 = self.phases.iter().map(|p| p.gc_errors).sum();
        if push_errors + gc_errors > 0 {
            let first = self.phases.iter().find_map(|p| p.first_error.clone());
            println!(
                "ERRORS: {push_errors} push or delete, {gc_errors} GC; the first: {}",
                first.unwrap_or_default()
            );
        }
    }
}

async fn pushes(knobs: &Knobs) -> PushResult {
    println!(
        "\n=== part 2: {} pushers, {} s per phase, {} rounds ===",
        knobs.pushers, knobs.push_seconds, knobs.rounds
    );
    let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let busy_limit = knobs.busy_limit_pct / 100.0 * cpus;
    let mut phases = Vec::new();
    for round in 1..=knobs.rounds {
        // Alternate the order: off, on in odd rounds; on, off in even ones.
        let order = if round % 2 == 1 {
            [false, true]
        } else {
            [true, false]
        };
        for gc in order {
            let busy_before = wait_for_idle(knobs, busy_limit / cpus).await;
            let phase = push_phase(knobs, round, gc, busy_before).await;
            let errors = phase.push_errors + phase.gc_errors;
            println!(
                "round {round} GC {}: {} images in {} = {:.1} images/s; {} deletions; GC runs \
                 {}, freed {}, calls {}; CPU this process {} / others {} cores (busy before {}){}",
                if gc { "on " } else { "off" },
                phase.images,
                secs(phase.seconds),
                phase.rate(),
                phase.deletions,
                phase.gc_runs,
                phase.gc_freed,
                tallies_line(&phase.gc_calls),
                figure(phase.own_cores(), 2),
                figure(phase.other_cores(), 2),
                figure(phase.busy_before.map(|b| b * 100.0), 0) + " %",
                if errors > 0 {
                    format!("; {errors} ERRORS")
                } else {
                    String::new()
                }
            );
            phases.push(phase);
        }
    }
    PushResult { phases, busy_limit }
}

/// Measures how busy the machine is for a second, again while it is busier than `limit`
/// (a share of the machine) and `GC_IDLE_WAIT` seconds have not passed. Returns the last
/// share measured.
async fn wait_for_idle(knobs: &Knobs, limit: f64) -> Option<f64> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let started = Instant::now();
    loop {
        let before = host_busy_seconds();
        let clock = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let busy = host_busy_seconds()
            .zip(before)
            .map(|(after, before)| (after - before) / clock.elapsed().as_secs_f64() / cpus);
        let waited = started.elapsed().as_secs_f64();
        if busy.is_none_or(|busy| busy <= limit) || waited >= knobs.idle_wait {
            return busy;
        }
    }
}

/// What the pushers, the deleter and the GC loop share.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    images: AtomicU64,
    push_errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    deletions: AtomicU64,
    gc_runs: AtomicU64,
    gc_freed: AtomicU64,
    gc_errors: AtomicU64,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn error(&self, error: impl std::fmt::Display) {
        self.push_errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self
            .first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        first.get_or_insert_with(|| error.to_string());
    }

    fn gc_error(&self, error: impl std::fmt::Display) {
        self.gc_errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self
            .first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        first.get_or_insert_with(|| format!("garbage collection: {error}"));
    }
}

/// Pushes image `n` of pusher `p` as a client would: each blob checked first (HEAD),
/// uploaded when the repository lacks it, then the manifest put with a tag.
async fn push_image(
    registry: &Registry,
    repository: &RepositoryName,
    base: &Bytes,
    p: usize,
    n: u64,
    size: usize,
) -> Result<Digest> {
    let config = config(&format!("push config {p} {n}"), size);
    let layer = blob(&format!("push layer {p} {n}"), size);
    for bytes in [&config, base, &layer] {
        if registry
            .blob_size(repository, &sha256(bytes))
            .await
            .is_err()
        {
            upload(registry, repository, bytes).await?;
        }
    }
    put_image(
        registry,
        repository,
        &format!("t{n}"),
        image_manifest(&config, &[base, &layer]),
    )
    .await
}

async fn push_phase(knobs: &Knobs, round: usize, gc: bool, busy_before: Option<f64>) -> Phase {
    let setup = setup(knobs);
    let shared = Arc::new(Shared::default());
    let base = blob("push base layer", knobs.blob_bytes);
    let (deletes, mut queue) = tokio::sync::mpsc::unbounded_channel::<(RepositoryName, Digest)>();

    let cpu_before = (own_cpu_seconds(), host_busy_seconds());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..knobs.pushers {
        let (registry, shared, base, deletes) = (
            setup.registry.clone(),
            shared.clone(),
            base.clone(),
            deletes.clone(),
        );
        let size = knobs.blob_bytes;
        tasks.push(tokio::spawn(async move {
            let repository: RepositoryName =
                format!("push/p{p}").parse().expect("a repository name");
            let mut n = 0;
            while !shared.stopped() {
                n += 1;
                match push_image(&registry, &repository, &base, p, n, size).await {
                    Ok(digest) => {
                        if !shared.stopped() {
                            shared.images.fetch_add(1, Ordering::Relaxed);
                        }
                        deletes.send((repository.clone(), digest)).ok();
                    }
                    Err(error) => shared.error(error),
                }
            }
        }));
    }
    drop(deletes);

    // The deleter: every `delete_every`-th image, once `delete_lag` newer ones are queued.
    let deleter = {
        let (registry, shared) = (setup.registry.clone(), shared.clone());
        let (every, lag) = (knobs.delete_every, knobs.delete_lag);
        tokio::spawn(async move {
            let mut pending = VecDeque::new();
            let mut seen = 0_usize;
            while let Some(image) = queue.recv().await {
                seen += 1;
                if every == 0 || !seen.is_multiple_of(every) {
                    continue;
                }
                pending.push_back(image);
                while pending.len() > lag && !shared.stopped() {
                    let Some((repository, digest)) = pending.pop_front() else {
                        break;
                    };
                    let reference = Reference::Digest(digest);
                    match registry
                        .delete_manifest(&context(), &repository, &reference)
                        .await
                    {
                        Ok(()) => {
                            shared.deletions.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => shared.error(format!("deleting: {error}")),
                    }
                }
            }
        })
    };

    let calls_before = setup.calls.snapshot();
    let collector = gc.then(|| {
        let (collector, shared) = (setup.collector.clone(), shared.clone());
        let options = GcOptions {
            dry_run: false,
            delete_untagged: false,
            grace_ms: knobs.push_grace_ms,
        };
        let (budget, pause) = (knobs.budget, Duration::from_millis(knobs.loop_pause_ms));
        tokio::spawn(async move {
            // `Collector::run`, step by step as it does it, so that the loop stops with the
            // phase instead of finishing a run after it.
            while !shared.stopped() {
                let mut progress = GcProgress::new(options, now_ms());
                while !progress.is_done() && !shared.stopped() {
                    let freed = progress.blobs_deleted;
                    if let Err(error) = collector.step(&mut progress, budget).await {
                        shared.gc_error(error);
                        break;
                    }
                    let freed = progress.blobs_deleted - freed;
                    shared.gc_freed.fetch_add(freed, Ordering::Relaxed);
                }
                if progress.is_done() {
                    shared.gc_runs.fetch_add(1, Ordering::Relaxed);
                }
                if pause.is_zero() {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(pause).await;
                }
            }
        })
    });

    tokio::time::sleep(Duration::from_secs_f64(knobs.push_seconds)).await;
    shared.stop.store(true, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = (own_cpu_seconds(), host_busy_seconds());
    if let Some(collector) = collector {
        collector.await.expect("the GC loop");
    }
    // Counted once the loop stopped, as its freed blobs are (at most one step late).
    let gc_calls = setup.calls.since(&calls_before);
    for task in tasks {
        task.await.expect("a pusher");
    }
    deleter.await.expect("the deleter");
    let delta = |before: Option<f64>, after: Option<f64>| Some(after? - before?);
    let first_error = shared
        .first_error
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    Phase {
        round,
        gc,
        seconds,
        images: shared.images.load(Ordering::Relaxed),
        push_errors: shared.push_errors.load(Ordering::Relaxed),
        gc_errors: shared.gc_errors.load(Ordering::Relaxed),
        busy_before,
        first_error,
        deletions: shared.deletions.load(Ordering::Relaxed),
        gc_runs: shared.gc_runs.load(Ordering::Relaxed),
        gc_freed: shared.gc_freed.load(Ordering::Relaxed),
        gc_calls,
        own_cpu_seconds: delta(cpu_before.0, cpu_after.0),
        host_busy_seconds: delta(cpu_before.1, cpu_after.1),
    }
}

// ---------------------------------------------------------------------------------------
// Machine load (Linux /proc; `None` elsewhere)
// ---------------------------------------------------------------------------------------

/// Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

/// CPU time (user + system) of this process so far.
fn own_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS)
}

/// Busy CPU time of the whole machine so far (all CPUs, everything but idle and iowait).
fn host_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let total: f64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((total - idle) / TICKS)
}

fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}
