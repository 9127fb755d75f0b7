//! Online garbage collection: the blob index it works from ([`GarbageIndex`]), where its runs
//! are kept ([`GcHistory`]), and the [`Collector`] that runs it in bounded steps.
//!
//! A metadata store that implements [`GarbageIndex`] keeps one record per blob: its size, how
//! many (repository, manifest) pairs reference it, and when it was last uploaded or linked.
//! The counts change in the same write as the manifest puts and deletes that change them,
//! and a blob whose count may have reached zero becomes a *candidate*, so a run visits only
//! what changed since the last one, never the whole registry.
//!
//! Pushes keep running during a run. The protocol that keeps them safe:
//! - Before an upload publishes a blob's bytes, and before a mount links one, the registry
//!   *claims* the blob ([`GarbageIndex::claim_blob`]): its record is touched now.
//! - A run deletes a blob only after marking its record *collecting*, on the condition that
//!   it still has no references and was last touched before the cutoff (the run's start
//!   minus the grace window). A claim or a new reference after that point finds the mark: a
//!   claim waits until the blob is gone and then uploads it again; a manifest put that
//!   references it fails as if the blob were missing.
//! - Links to a blob whose record is gone or collecting are not served.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{RegistryError, Result};
use crate::events::{Actor, EntryPoint, Event, EventKind, EventSink, RequestContext};
use crate::manifest::parse_manifest;
use crate::names::RepositoryName;
use crate::ports::{BlobStore, MetadataStore, all_manifests, all_tag_targets};

/// How long a blob stays safe after it was uploaded or linked, by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(2 * 3600);
/// The most lines a run's log keeps; the counts are always complete.
pub const MAX_LOG_LINES: usize = 1_000;

/// What the index knows of one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRecord {
    pub digest: Digest,
    pub size: u64,
    /// How many (repository, manifest) pairs reference the blob.
    pub refs: u64,
    /// Unix milliseconds of the last upload, link or new reference (of the deletion, for a
    /// collected blob).
    pub touched_ms: u64,
    pub state: BlobState,
}

/// Where a blob stands with garbage collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobState {
    Live,
    /// A run marked it and is deleting its bytes.
    Collecting,
    /// Its bytes are deleted. The record stays for a day, so that a manifest put that found
    /// the blob linked just before fails instead of referencing missing bytes; an upload
    /// makes it live again.
    Collected,
}

/// How long a collected blob's record stays.
pub const COLLECTED_RECORD_MS: u64 = 24 * 3600 * 1000;

/// The outcome of a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The blob is safe from collection for the grace window.
    Claimed,
    /// A run is deleting the blob: wait until its record is gone, then claim again.
    Collecting,
}

/// The blob records a metadata store keeps for garbage collection.
///
/// The store also keeps them up to date in `put_manifest` (a new manifest in a repository
/// adds one reference to each distinct blob it names, touching it, and creating the record
/// of a blob it has none of; it fails with `MANIFEST_BLOB_UNKNOWN` if one is collecting or
/// collected), `delete_manifest` and `delete_repository` (each removed manifest drops its
/// references; a blob left with none becomes a candidate), and `blob_links` (a link to a
/// blob that is collecting or collected is not served).
#[async_trait]
pub trait GarbageIndex: Send + Sync + 'static {
    /// Marks the blob as uploaded or linked at `now_ms`: creates its record (without
    /// references), touches it, or makes a collected blob live again; and makes it a
    /// candidate. Nothing changes when a run is collecting it.
    async fn claim_blob(&self, digest: &Digest, size: u64, now_ms: u64) -> Result<Claim>;

    /// The blob's record.
    async fn blob_record(&self, digest: &Digest) -> Result<Option<BlobRecord>>;

    /// The records of `digests`, in order, in as few reads as the store allows.
    async fn blob_records(&self, digests: &[Digest]) -> Result<Vec<Option<BlobRecord>>>;

    /// Up to `limit` candidates in digest order, after `after`.
    async fn candidates(&self, after: Option<&str>, limit: usize) -> Result<Vec<Digest>>;

    /// Forgets candidates that turned out to be referenced or unknown, in one write; one
    /// that is unreferenced again by now stays. A blob that loses its last reference later
    /// becomes a candidate again.
    async fn drop_candidates(&self, digests: &[Digest]) -> Result<()>;

    /// Marks each blob collecting if it is live, has no references and was last touched
    /// before `cutoff_ms`, or is already marked (by a run that stopped). Returns the records
    /// as marked; the blobs that must stay are left out.
    async fn begin_collect(&self, digests: &[Digest], cutoff_ms: u64) -> Result<Vec<BlobRecord>>;

    /// Records that collecting blobs' bytes (`records`, as marked) are deleted (at
    /// `now_ms`), and takes their sizes off [`GarbageIndex::stored_bytes`]; they stay
    /// candidates until their records are forgotten.
    async fn end_collect(&self, records: &[BlobRecord], now_ms: u64) -> Result<()>;

    /// The bytes of the blobs the store holds, as the index counts them: a claim that makes
    /// a blob live (new, or collected before) adds its size in the same write, the end of
    /// its collection takes it off.
    async fn stored_bytes(&self) -> Result<u64>;

    /// Removes the record and the candidate of a blob collected before `before_ms`, if it
    /// is still collected.
    async fn forget_collected(&self, digest: &Digest, before_ms: u64) -> Result<()>;

    /// Whether every reference is counted, so that a run may trust the counts. A store
    /// whose data predates its blob records answers `false` until they are counted.
    async fn references_counted(&self) -> Result<bool>;
}

/// What a run was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcOptions {
    /// Report what would be deleted, delete nothing.
    pub dry_run: bool,
    /// Delete manifests no tag points at first (Harbor's `delete_untagged`).
    pub delete_untagged: bool,
    /// Milliseconds a blob stays safe after it was uploaded or linked.
    pub grace_ms: u64,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            delete_untagged: false,
            grace_ms: u64::try_from(DEFAULT_GRACE.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// Where a run stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum Phase {
    /// Deleting untagged manifests, repository by repository.
    Untagged {
        after: Option<String>,
    },
    /// Visiting candidates, in digest order.
    Blobs {
        after: Option<String>,
    },
    Done,
}

/// A run's state between steps: everything needed to resume it, and its counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcProgress {
    pub options: GcOptions,
    pub started_ms: u64,
    /// Blobs touched at or after this are kept.
    pub cutoff_ms: u64,
    pub phase: Phase,
    pub manifests_deleted: u64,
    pub blobs_deleted: u64,
    pub bytes_freed: u64,
    pub log: Vec<String>,
}

impl GcProgress {
    /// A run starting at `now_ms`.
    pub fn new(options: GcOptions, now_ms: u64) -> Self {
        Self {
            options,
            started_ms: now_ms,
            cutoff_ms: now_ms.saturating_sub(options.grace_ms),
            phase: if options.delete_untagged {
                Phase::Untagged { after: None }
            } else {
                Phase::Blobs { after: None }
            },
            manifests_deleted: 0,
            blobs_deleted: 0,
            bytes_freed: 0,
            log: Vec::new(),
        }
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    fn note(&mut self, line: String) {
        if self.log.len() < MAX_LOG_LINES {
            self.log.push(line);
        } else if self.log.len() == MAX_LOG_LINES {
            self.log.push(format!(
                "(the log keeps {MAX_LOG_LINES} lines; the counts go on)"
            ));
        }
    }

    /// Counts a blob deleted (or, in a dry run, that would be) and logs it as `what`.
    fn freed(&mut self, record: &BlobRecord, what: &str) {
        self.note(format!(
            "blob {} ({} bytes): {what}",
            record.digest, record.size
        ));
        self.blobs_deleted += 1;
        self.bytes_freed += record.size;
    }

    /// The closing line of a run's log.
    pub fn summary(&self) -> String {
        let verb = if self.options.dry_run {
            "would free"
        } else {
            "freed"
        };
        format!(
            "{verb} {} blobs, {} bytes; {} untagged manifests {}",
            self.blobs_deleted,
            self.bytes_freed,
            self.manifests_deleted,
            if self.options.dry_run {
                "would be deleted"
            } else {
                "deleted"
            }
        )
    }
}

/// How a run ended, or that it has not: Harbor's job statuses, as webhook deliveries have
/// them too.
pub use crate::webhooks::DeliveryStatus as GcStatus;

/// One run, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRun {
    pub id: u64,
    /// Started by a schedule (`true`) or by hand.
    pub scheduled: bool,
    pub status: GcStatus,
    pub progress: GcProgress,
    pub updated_ms: u64,
    pub error: Option<String>,
}

/// When runs start by themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcSchedule {
    /// Harbor's schedule type: `Hourly`, `Daily`, `Weekly`, `Custom` or `None`.
    pub kind: String,
    /// Six-field cron expression (seconds first); `None` with kind `None`.
    pub cron: Option<String>,
    pub options: GcOptions,
    /// Unix milliseconds of the last time the schedule started a run (or was set): the next
    /// start is the cron's first time after it.
    #[serde(default)]
    pub fired_ms: u64,
}

/// Where runs and the schedule are kept.
#[async_trait]
pub trait GcHistory: Send + Sync + 'static {
    /// Stores a new run and returns its id (ids grow).
    async fn create_run(&self, scheduled: bool, progress: &GcProgress, now_ms: u64) -> Result<u64>;

    /// Replaces a run's state.
    async fn update_run(&self, run: &GcRun) -> Result<()>;

    async fn run(&self, id: u64) -> Result<Option<GcRun>>;

    /// Up to `limit` runs, newest first, skipping `skip`; and how many there are.
    async fn runs(&self, skip: usize, limit: usize) -> Result<(Vec<GcRun>, usize)>;

    async fn schedule(&self) -> Result<Option<GcSchedule>>;

    async fn set_schedule(&self, schedule: &GcSchedule) -> Result<()>;
}

/// Runs garbage collection over one registry's stores.
pub struct Collector {
    meta: Arc<dyn MetadataStore>,
    index: Arc<dyn GarbageIndex>,
    blobs: Arc<dyn BlobStore>,
    events: Option<Arc<dyn EventSink>>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector").finish_non_exhaustive()
    }
}

/// Repositories whose untagged manifests one step deletes.
const REPOSITORIES_PER_STEP: usize = 10;

/// Blob deletions a step has going at once.
const DELETIONS_AT_ONCE: usize = 8;

/// What a visit made of a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Visit {
    /// It stays a candidate (deleted blobs too, until their record is forgotten).
    Kept,
    /// Referenced or unknown: no longer a candidate.
    Settled,
    /// Unreferenced past the grace window (or marked by a run that stopped): to delete.
    Eligible(BlobRecord),
}

impl Collector {
    pub fn new(
        meta: Arc<dyn MetadataStore>,
        index: Arc<dyn GarbageIndex>,
        blobs: Arc<dyn BlobStore>,
    ) -> Self {
        Self {
            meta,
            index,
            blobs,
            events: None,
        }
    }

    /// Publishes the manifests a run deletes, as Berth's own deletions.
    pub fn with_events(mut self, events: Arc<dyn EventSink>) -> Self {
        self.events = Some(events);
        self
    }

    /// Whether the index's counts may be trusted (see
    /// [`GarbageIndex::references_counted`]): a run must not start before.
    pub async fn ready(&self) -> Result<bool> {
        self.index.references_counted().await
    }

    /// The bytes of the blobs stored (see [`GarbageIndex::stored_bytes`]).
    pub async fn stored_bytes(&self) -> Result<u64> {
        self.index.stored_bytes().await
    }

    /// Runs to the end, `budget` candidates a step.
    pub async fn run(&self, progress: &mut GcProgress, budget: usize) -> Result<()> {
        while !progress.is_done() {
            self.step(progress, budget).await?;
        }
        Ok(())
    }

    /// Does a bounded amount of work: about `budget` candidates, or a few repositories'
    /// untagged manifests. `progress` says where to go on from; a step cut short by an error
    /// is repeated safely.
    pub async fn step(&self, progress: &mut GcProgress, budget: usize) -> Result<()> {
        match progress.phase.clone() {
            Phase::Untagged { after } => self.untagged_step(progress, after).await,
            Phase::Blobs { after } => self.blob_step(progress, after, budget.max(1)).await,
            Phase::Done => Ok(()),
        }
    }

    async fn untagged_step(&self, progress: &mut GcProgress, after: Option<String>) -> Result<()> {
        let repositories = self
            .meta
            .repositories(after.as_deref(), REPOSITORIES_PER_STEP)
            .await?;
        for name in &repositories {
            let repository: RepositoryName = name.parse()?;
            for digest in untagged(self.meta.as_ref(), &repository).await? {
                let line = format!("untagged manifest {repository}@{digest}");
                if progress.options.dry_run {
                    progress.note(format!("{line}: would be deleted"));
                    progress.manifests_deleted += 1;
                } else if self.meta.delete_manifest(&repository, &digest).await? {
                    progress.note(format!("{line}: deleted"));
                    progress.manifests_deleted += 1;
                    if let Some(events) = &self.events {
                        events.publish(&Event::now(
                            &gc_context(),
                            EventKind::ManifestDeleted {
                                repository: repository.clone(),
                                digest,
                            },
                        ));
                    }
                }
            }
        }
        progress.phase = if repositories.len() < REPOSITORIES_PER_STEP {
            Phase::Blobs { after: None }
        } else {
            Phase::Untagged {
                after: repositories.last().cloned(),
            }
        };
        Ok(())
    }

    async fn blob_step(
        &self,
        progress: &mut GcProgress,
        after: Option<String>,
        budget: usize,
    ) -> Result<()> {
        let candidates = self.index.candidates(after.as_deref(), budget).await?;
        let records = self.index.blob_records(&candidates).await?;
        let mut settled = Vec::new();
        let mut eligible = Vec::new();
        for (digest, record) in candidates.iter().zip(records) {
            match self.decide(progress, digest, record).await? {
                Visit::Settled => settled.push(digest.clone()),
                Visit::Eligible(record) => eligible.push(record),
                Visit::Kept => {}
            }
        }
        if progress.options.dry_run {
            for record in &eligible {
                progress.freed(record, "would be deleted");
            }
        } else if !eligible.is_empty() {
            self.collect(progress, &eligible).await?;
        }
        if !settled.is_empty() {
            self.index.drop_candidates(&settled).await?;
        }
        progress.phase = match candidates.last() {
            Some(last) if candidates.len() == budget => Phase::Blobs {
                after: Some(last.to_string()),
            },
            _ => Phase::Done,
        };
        if progress.is_done() {
            let summary = progress.summary();
            progress.note(summary);
        }
        Ok(())
    }

    /// Marks `eligible` collecting (one write), deletes their bytes (a few at a time), and
    /// records them collected (one write).
    async fn collect(&self, progress: &mut GcProgress, eligible: &[BlobRecord]) -> Result<()> {
        let digests: Vec<Digest> = eligible.iter().map(|r| r.digest.clone()).collect();
        let marked = self
            .index
            .begin_collect(&digests, progress.cutoff_ms)
            .await?;
        for chunk in marked.chunks(DELETIONS_AT_ONCE) {
            let deletions: Vec<_> = chunk
                .iter()
                .map(|record| self.blobs.delete(&record.digest))
                .collect();
            for deleted in futures_util::future::join_all(deletions).await {
                deleted?;
            }
        }
        self.index.end_collect(&marked, now_ms()).await?;
        for record in &marked {
            progress.freed(record, "deleted");
        }
        Ok(())
    }

    /// Decides one candidate from its record: to delete, to leave for a later run, or
    /// settled (referenced, or unknown) so that it stops being a candidate.
    async fn decide(
        &self,
        progress: &GcProgress,
        digest: &Digest,
        record: Option<BlobRecord>,
    ) -> Result<Visit> {
        let Some(record) = record else {
            return Ok(Visit::Settled);
        };
        Ok(match record.state {
            BlobState::Collected => {
                let before = progress.started_ms.saturating_sub(COLLECTED_RECORD_MS);
                if record.touched_ms < before && !progress.options.dry_run {
                    self.index.forget_collected(digest, before).await?;
                }
                Visit::Kept
            }
            BlobState::Live if record.refs > 0 => Visit::Settled,
            // Within the grace window: a later run decides.
            BlobState::Live if record.touched_ms >= progress.cutoff_ms => Visit::Kept,
            BlobState::Live | BlobState::Collecting => Visit::Eligible(record),
        })
    }
}

/// The request context of Berth's own garbage collection.
pub fn gc_context() -> RequestContext {
    RequestContext {
        actor: Actor::System("gc".to_owned()),
        request_id: format!("gc-{}", now_ms()),
        client: String::new(),
        entry: EntryPoint::System,
    }
}

/// The manifests of `repository` that no tag points at, that no index there lists, and
/// whose subject (if they name one) is not in the repository.
async fn untagged(meta: &dyn MetadataStore, repository: &RepositoryName) -> Result<Vec<Digest>> {
    let manifests = all_manifests(meta, repository).await?;
    let mut kept: std::collections::HashSet<String> = all_tag_targets(meta, repository)
        .await?
        .into_iter()
        .map(|(_, digest)| digest.to_string())
        .collect();
    let present: std::collections::HashSet<&str> =
        manifests.iter().map(|m| m.digest.as_str()).collect();
    for manifest in &manifests {
        if let Ok(parsed) = parse_manifest(Some(&manifest.media_type), &manifest.bytes) {
            kept.extend(
                parsed
                    .manifests
                    .iter()
                    .map(|child| child.digest.to_string()),
            );
        }
    }
    Ok(manifests
        .iter()
        .filter(|m| !kept.contains(m.digest.as_str()))
        .filter(|m| {
            m.referrer
                .as_ref()
                .is_none_or(|(subject, _)| !present.contains(subject.as_str()))
        })
        .map(|m| m.digest.clone())
        .collect())
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The error a claim gives up with when a run keeps a blob marked.
pub(crate) fn still_collecting(digest: &Digest) -> RegistryError {
    RegistryError::unavailable(format!(
        "blob {digest} is being deleted by garbage collection; try again"
    ))
}
