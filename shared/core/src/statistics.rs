//! Pull and push statistics: what an [`Event`] counts (a [`Count`]), and the
//! [`StatisticsStore`] port that keeps the counters.

use async_trait::async_trait;

use crate::audit::AuditEntry;
use crate::digest::Digest;
use crate::error::Result;
use crate::events::{Event, EventKind};
use crate::names::RepositoryName;

/// How many days of daily pull counts a store keeps and answers.
pub const DAILY_PULL_DAYS: u64 = 30;
const DAY_MS: u64 = 86_400_000;

/// One thing to count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    /// The event's audit id: counting the same event again counts it once.
    pub id: u64,
    pub repository: RepositoryName,
    pub digest: Digest,
    pub at_ms: u64,
    pub pull: bool,
}

impl Count {
    /// What `event` counts: manifest pulls and pushes.
    pub fn of(event: &Event) -> Option<Self> {
        Self::with_id(event, AuditEntry::of(event)?.id)
    }

    /// What `event` counts, under the audit id `id` already made for it.
    pub fn with_id(event: &Event, id: u64) -> Option<Self> {
        let (repository, digest, pull) = match &event.kind {
            EventKind::ManifestPulled {
                repository, digest, ..
            } => (repository, digest, true),
            EventKind::ManifestPushed {
                repository, digest, ..
            } => (repository, digest, false),
            _ => return None,
        };
        Some(Self {
            id,
            repository: repository.clone(),
            digest: digest.clone(),
            at_ms: event.at_ms,
            pull,
        })
    }

    /// The day (days since the Unix epoch) the count falls on.
    pub fn day(&self) -> u64 {
        self.at_ms / DAY_MS
    }
}

/// The counters of one repository or artifact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub pull_count: u64,
    /// Unix milliseconds of the last pull.
    pub last_pull_ms: Option<u64>,
    /// Unix milliseconds of the last push.
    pub push_ms: Option<u64>,
}

/// Pulls on one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyPulls {
    /// Days since the Unix epoch.
    pub day: u64,
    pub pulls: u64,
}

/// Keeps the pull and push counters.
///
/// `Any`, so that an audit store that keeps the counters in the same place can recognise
/// itself in [`AuditStore::record_counted`](crate::audit::AuditStore::record_counted).
#[async_trait]
pub trait StatisticsStore: std::any::Any + Send + Sync {
    /// Counts `counts`; one already counted (by id) is not counted again.
    async fn record(&self, counts: &[Count]) -> Result<()>;

    /// A repository's counters (zero when nothing was counted).
    async fn repository_usage(&self, repository: &RepositoryName) -> Result<Usage>;

    /// An artifact's counters (zero when nothing was counted).
    async fn artifact_usage(&self, repository: &RepositoryName, digest: &Digest) -> Result<Usage>;

    /// The `limit` most pulled repositories, most pulled first (ties by name), with their
    /// pull counts.
    async fn most_pulled(&self, limit: usize) -> Result<Vec<(String, u64)>>;

    /// Pulls per day over the [`DAILY_PULL_DAYS`] days up to and including `today`, oldest
    /// first, days without pulls included as zero.
    async fn daily_pulls(&self, today: u64) -> Result<Vec<DailyPulls>>;
}

/// The days a daily listing covers: the [`DAILY_PULL_DAYS`] days up to `today`.
pub fn daily_window(today: u64) -> std::ops::RangeInclusive<u64> {
    today.saturating_sub(DAILY_PULL_DAYS - 1)..=today
}
