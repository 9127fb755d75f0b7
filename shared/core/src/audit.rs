//! The audit log: what an [`Event`] records (an [`AuditEntry`] in Harbor's terms), and the
//! [`AuditStore`] port that keeps entries and answers queries over them.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::Result;
use crate::events::{Event, EventKind, Operation};
use crate::statistics::{Count, StatisticsStore};

/// The largest page of a query.
pub const MAX_AUDIT_PAGE: usize = 100;
/// Ids stay below 2^53, so that JavaScript reads them exactly.
const ID_LIMIT: u64 = 1 << 53;

/// One recorded operation, as Harbor's audit log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Derived from the request id and what the entry records: the same event recorded again
    /// (a redelivery) makes the same entry, which a store keeps once.
    pub id: u64,
    /// Unix time in milliseconds.
    pub at_ms: u64,
    pub username: String,
    /// What was acted on: `repo:tag` or `repo@digest` for artifacts, the account or project
    /// name otherwise.
    pub resource: String,
    /// `artifact`, `tag`, `user`, `project`, `project_member`, `robot`, `replication` or
    /// `quota`.
    pub resource_type: String,
    /// `create`, `update`, `delete`, `pull`, `login`, `login_failed`, `replicate` or
    /// `quota_exceed`.
    pub operation: String,
    /// The project the entry belongs to, which its admins may read.
    pub project: Option<String>,
}

impl AuditEntry {
    /// Whether an event of this kind records an entry (a cheap test, for the request path).
    pub fn records(kind: &EventKind) -> bool {
        !matches!(
            kind,
            EventKind::BlobPushed { .. }
                | EventKind::BlobPulled { .. }
                | EventKind::BlobMounted { .. }
                | EventKind::BlobDeleted { .. }
                | EventKind::MaintenanceRun { .. }
        )
    }

    /// The entry an event records, if it records one (blob traffic is not audited: the
    /// artifact's push and pull are).
    pub fn of(event: &Event) -> Option<Self> {
        let artifact = |repository: &crate::RepositoryName, at: String| {
            (at, Some(project_of(repository.as_str())))
        };
        let (resource_type, operation, (resource, project)) = match &event.kind {
            EventKind::ManifestPushed {
                repository,
                digest,
                tag,
                ..
            } => (
                "artifact",
                "create",
                artifact(
                    repository,
                    match tag {
                        Some(tag) => format!("{repository}:{tag}"),
                        None => format!("{repository}@{digest}"),
                    },
                ),
            ),
            EventKind::ManifestPulled {
                repository, digest, ..
            } => (
                "artifact",
                "pull",
                artifact(repository, format!("{repository}@{digest}")),
            ),
            EventKind::ManifestDeleted { repository, digest } => (
                "artifact",
                "delete",
                artifact(repository, format!("{repository}@{digest}")),
            ),
            EventKind::TagDeleted { repository, tag } => (
                "tag",
                "delete",
                artifact(repository, format!("{repository}:{tag}")),
            ),
            EventKind::LoginSucceeded { username } => ("user", "login", (username.clone(), None)),
            EventKind::LoginFailed { username } => {
                ("user", "login_failed", (username.clone(), None))
            }
            EventKind::AccountChanged {
                resource,
                operation,
                name,
            } => {
                let project = match resource {
                    crate::events::AccountResource::User => None,
                    crate::events::AccountResource::Project => Some(name.clone()),
                    crate::events::AccountResource::Member
                    | crate::events::AccountResource::Webhook
                    | crate::events::AccountResource::ImmutableRule => {
                        name.split('/').next().map(str::to_owned)
                    }
                    crate::events::AccountResource::Robot => {
                        crate::accounts::robot_project(name).map(str::to_owned)
                    }
                };
                (
                    resource.as_str(),
                    match operation {
                        Operation::Create => "create",
                        Operation::Update => "update",
                        Operation::Delete => "delete",
                    },
                    (name.clone(), project),
                )
            }
            EventKind::ReplicationRun {
                policy, execution, ..
            } => (
                "replication",
                "replicate",
                (format!("{policy} execution {execution}"), None),
            ),
            EventKind::QuotaExceeded {
                repository, digest, ..
            } => (
                "quota",
                "quota_exceed",
                artifact(repository, format!("{repository}@{digest}")),
            ),
            EventKind::BlobPushed { .. }
            | EventKind::BlobPulled { .. }
            | EventKind::BlobMounted { .. }
            | EventKind::BlobDeleted { .. }
            | EventKind::MaintenanceRun { .. } => return None,
        };
        let mut hash = Sha256::new();
        for part in [&event.request_id, resource_type, operation, &resource] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        let hash = hash.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash[..8]);
        Some(Self {
            id: u64::from_be_bytes(first) % ID_LIMIT,
            at_ms: event.at_ms,
            username: event.actor.name().to_owned(),
            resource,
            resource_type: resource_type.to_owned(),
            operation: operation.to_owned(),
            project,
        })
    }
}

/// The project of a repository: its first path component (a one-part name is its own).
pub fn project_of(repository: &str) -> String {
    repository
        .split('/')
        .next()
        .unwrap_or(repository)
        .to_owned()
}

/// Which entries a query wants, and which page of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this project's entries.
    pub project: Option<String>,
    pub operation: Option<String>,
    pub resource_type: Option<String>,
    /// Entries whose resource contains this text.
    pub resource: Option<String>,
    pub username: Option<String>,
    /// Unix milliseconds, inclusive.
    pub from_ms: Option<u64>,
    /// Unix milliseconds, inclusive.
    pub to_ms: Option<u64>,
    /// Oldest first instead of newest first.
    pub oldest_first: bool,
    /// From 1.
    pub page: usize,
    /// At most [`MAX_AUDIT_PAGE`].
    pub page_size: usize,
}

impl Default for AuditQuery {
    fn default() -> Self {
        Self {
            project: None,
            operation: None,
            resource_type: None,
            resource: None,
            username: None,
            from_ms: None,
            to_ms: None,
            oldest_first: false,
            page: 1,
            page_size: 10,
        }
    }
}

impl AuditQuery {
    /// Whether `entry` is one this query wants (time aside, which stores scan by).
    pub fn matches(&self, entry: &AuditEntry) -> bool {
        let same =
            |wanted: &Option<String>, value: &str| wanted.as_deref().is_none_or(|w| w == value);
        same(&self.operation, &entry.operation)
            && same(&self.resource_type, &entry.resource_type)
            && same(&self.username, &entry.username)
            && self
                .project
                .as_deref()
                .is_none_or(|project| entry.project.as_deref() == Some(project))
            && self
                .resource
                .as_deref()
                .is_none_or(|text| entry.resource.contains(text))
            && self.from_ms.is_none_or(|from| entry.at_ms >= from)
            && self.to_ms.is_none_or(|to| entry.at_ms <= to)
    }
}

/// One page of a query's answer, and how many entries match in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub total: u64,
}

/// Keeps the audit log.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Records `entries`, each kept until `retention_ms` after its time. Recording an entry
    /// again (the same id and time: a redelivered event) keeps it once.
    async fn record(&self, entries: &[AuditEntry], retention_ms: u64) -> Result<()>;

    /// Records `entries` as [`record`](Self::record) does and counts `counts` in
    /// `statistics` as [`StatisticsStore::record`] does, where each count is what one of
    /// `entries` counts (its id and time are the entry's). Recording them again records and
    /// counts nothing more. A store that keeps `statistics` itself may write both at once and
    /// count an entry's count only when it records the entry for the first time, so that the
    /// entry alone says whether the count was made.
    async fn record_counted(
        &self,
        entries: &[AuditEntry],
        retention_ms: u64,
        counts: &[Count],
        statistics: &dyn StatisticsStore,
    ) -> Result<()> {
        self.record(entries, retention_ms).await?;
        statistics.record(counts).await
    }

    /// The page the query asks for, newest first unless it says otherwise (ties by id), and
    /// the number of matching entries. Entries past their retention are never answered.
    async fn query(&self, query: &AuditQuery, now_ms: u64) -> Result<AuditPage>;
}
