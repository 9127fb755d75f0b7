//! Replication's records and the port that keeps them: remote registry endpoints, replication
//! policies, and the executions and tasks that carry a policy out.
//!
//! The records are plain data; what they mean (filters, namespace rewriting, the copy) lives
//! in `berth-replication`. An adapter stores them as they are, serialised with serde.
//!
//! An execution keeps no counters: its status and counts are computed from its tasks when
//! read, so tasks finishing in different processes (different Lambda invocations) never race
//! on a shared counter.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A remote registry Berth replicates to or from (Harbor: a "registry endpoint").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryEndpoint {
    pub id: u64,
    /// Unique among endpoints.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `https://host[:port]` or `http://host[:port]`, no path.
    pub url: String,
    /// What kind of registry it is (Harbor's `type`): `docker-registry`, `harbor`, `berth`.
    pub kind: String,
    /// Skip TLS certificate verification (Harbor's `insecure`).
    #[serde(default)]
    pub insecure: bool,
    /// Credentials, the secret sealed (never stored or returned in the clear).
    #[serde(default)]
    pub credential: Option<SealedCredential>,
    /// Unix seconds.
    pub created: u64,
    pub updated: u64,
}

/// A user name (or robot name) and its secret, sealed by the registry's secret box.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedCredential {
    pub access_key: String,
    /// The sealed secret: opaque bytes only the secret box that made them can open.
    pub sealed_secret: Vec<u8>,
}

impl std::fmt::Debug for SealedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedCredential")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// Which way a policy copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From this registry to the remote one.
    Push,
    /// From the remote registry into this one.
    Pull,
}

/// What a filter matches against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterKind {
    /// The repository name, project included (`library/app`).
    Name,
    /// The tag.
    Tag,
}

/// One source filter: a glob pattern, kept when it matches (or when it does not, `exclude`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub kind: FilterKind,
    pub pattern: String,
    #[serde(default)]
    pub exclude: bool,
}

/// What starts a policy's executions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Trigger {
    /// Only `POST /replication/executions`.
    Manual,
    /// A push or delete in the source (push policies only), and manually.
    EventBased,
    /// A cron schedule (six fields, seconds first, as Harbor writes it), and manually.
    Scheduled { cron: String },
}

/// A replication policy (Harbor: a "replication rule").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub id: u64,
    /// Unique among policies.
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub direction: Direction,
    /// The remote endpoint: the destination of a push policy, the source of a pull policy.
    pub remote: u64,
    pub filters: Vec<Filter>,
    /// Where copies land: empty keeps the source name.
    #[serde(default)]
    pub dest_namespace: String,
    /// How many leading path components the namespace replaces (Harbor's
    /// `dest_namespace_replace_count`): -1 all but the last, 0 none (prefix), N the first N.
    #[serde(default)]
    pub dest_namespace_replace_count: i8,
    pub trigger: Trigger,
    /// Whether deleting in the source deletes in the destination.
    #[serde(default)]
    pub replicate_deletion: bool,
    /// Whether an existing destination tag pointing elsewhere is overwritten.
    #[serde(default)]
    pub overwrite: bool,
    pub enabled: bool,
    pub created: u64,
    pub updated: u64,
}

/// How an execution was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    Manual,
    EventBased,
    Scheduled,
}

/// One run of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    pub id: u64,
    pub policy_id: u64,
    pub trigger: TriggerKind,
    /// Unix seconds.
    pub start_time: u64,
    /// Set once the tasks are listed: until then the execution is still being planned.
    #[serde(default)]
    pub planned: bool,
    /// Why planning failed (listing the source, say), when it did.
    #[serde(default)]
    pub error: Option<String>,
    /// Someone asked to stop it: pending tasks will not start.
    #[serde(default)]
    pub stop_requested: bool,
}

/// What a task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Copy,
    Deletion,
}

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Stopped,
}

impl TaskStatus {
    /// Whether the task is over.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Stopped)
    }
}

/// One artifact of an execution: copy `repository:tag` (or a digest), or delete it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: u64,
    pub execution_id: u64,
    pub operation: Operation,
    /// Source repository, with the project.
    pub source_repository: String,
    /// Destination repository, after namespace rewriting.
    pub destination_repository: String,
    /// The tag, or the digest of an untagged artifact.
    pub reference: String,
    pub status: TaskStatus,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub start_time: Option<u64>,
    #[serde(default)]
    pub end_time: Option<u64>,
    /// Why it failed, for people.
    #[serde(default)]
    pub error: Option<String>,
    /// Bytes sent to the destination (blobs it already had are not counted).
    #[serde(default)]
    pub bytes: u64,
    /// What a person should know of a task that succeeded without copying (the destination
    /// had it already, or keeps its own tag because the policy does not overwrite).
    #[serde(default)]
    pub note: Option<String>,
    /// When the running attempt was claimed (unix seconds): a task still running long after
    /// (its worker timed out or crashed) may be claimed again.
    #[serde(default)]
    pub attempt_started: Option<u64>,
}

/// Which counter [`ReplicationStore::next_id`] draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    Registry,
    Policy,
    Execution,
    Task,
}

impl IdKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registry => "registry",
            Self::Policy => "policy",
            Self::Execution => "execution",
            Self::Task => "task",
        }
    }
}

/// Where replication's records live: the same redb database or DynamoDB table as the
/// registry's metadata.
#[async_trait]
pub trait ReplicationStore: Send + Sync + 'static {
    /// A new id of `kind`: 1, 2, 3... never the same twice, even across processes.
    async fn next_id(&self, kind: IdKind) -> Result<u64>;

    /// Creates or replaces an endpoint.
    async fn put_registry(&self, registry: &RegistryEndpoint) -> Result<()>;
    async fn registry(&self, id: u64) -> Result<Option<RegistryEndpoint>>;
    /// Every endpoint, by id.
    async fn registries(&self) -> Result<Vec<RegistryEndpoint>>;
    /// Returns whether it existed.
    async fn delete_registry(&self, id: u64) -> Result<bool>;

    /// Creates or replaces a policy.
    async fn put_policy(&self, policy: &Policy) -> Result<()>;
    async fn policy(&self, id: u64) -> Result<Option<Policy>>;
    /// Every policy, by id.
    async fn policies(&self) -> Result<Vec<Policy>>;
    /// Returns whether it existed.
    async fn delete_policy(&self, id: u64) -> Result<bool>;

    /// Creates or replaces an execution.
    async fn put_execution(&self, execution: &Execution) -> Result<()>;
    async fn execution(&self, id: u64) -> Result<Option<Execution>>;
    /// Up to `limit` executions, newest (highest id) first, of one policy or of all.
    async fn executions(&self, policy: Option<u64>, limit: usize) -> Result<Vec<Execution>>;

    /// Creates or replaces a task.
    async fn put_task(&self, task: &Task) -> Result<()>;
    async fn task(&self, execution: u64, id: u64) -> Result<Option<Task>>;
    /// Every task of an execution, by id.
    async fn tasks(&self, execution: u64) -> Result<Vec<Task>>;
    /// Replaces the task only if its stored status is still `expected`; returns whether it
    /// was replaced. This is how exactly one worker claims a pending task.
    async fn update_task(&self, task: &Task, expected: TaskStatus) -> Result<bool>;

    /// Records that the schedule of `policy` fired at `fire_time` (unix seconds), only if no
    /// fire at that time or later was recorded; returns whether this call recorded it. Two
    /// schedulers seeing the same tick start one execution.
    async fn claim_schedule(&self, policy: u64, fire_time: u64) -> Result<bool>;
}
