//! Tag retention: a project's policy (Harbor's rule templates, OR-ed), the executions that
//! carry it out (a task per repository), and the [`RetentionStore`] port that keeps them.
//! What a policy keeps of one repository is decided in [`rules`], from the artifacts' push
//! and pull times and an explicit `now`.

pub mod rules;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The most rules a policy holds (Harbor's limit).
pub const MAX_RULES: usize = 15;
/// The largest count or number of days a rule takes (Harbor's: below `i16::MAX`).
pub const MAX_PARAM: u64 = i16::MAX as u64 - 1;
/// The most lines a task's log keeps; the counts are always complete.
pub const MAX_LOG_LINES: usize = 1_000;

/// Harbor's rule templates: what a rule retains among the artifacts its selectors pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RuleTemplate {
    /// The `N` most recently pushed.
    #[serde(rename = "latestPushedK")]
    LatestPushed,
    /// The `N` most recently pulled.
    #[serde(rename = "latestPulledN")]
    LatestPulled,
    /// Those pushed within the last `N` days.
    #[serde(rename = "nDaysSinceLastPush")]
    PushedWithinDays,
    /// Those pulled within the last `N` days.
    #[serde(rename = "nDaysSinceLastPull")]
    PulledWithinDays,
    /// All of them.
    #[serde(rename = "always")]
    Always,
}

impl RuleTemplate {
    pub const ALL: [Self; 5] = [
        Self::LatestPushed,
        Self::LatestPulled,
        Self::PushedWithinDays,
        Self::PulledWithinDays,
        Self::Always,
    ];

    /// Harbor's name, which is also the name of its parameter.
    pub fn name(self) -> &'static str {
        match self {
            Self::LatestPushed => "latestPushedK",
            Self::LatestPulled => "latestPulledN",
            Self::PushedWithinDays => "nDaysSinceLastPush",
            Self::PulledWithinDays => "nDaysSinceLastPull",
            Self::Always => "always",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|template| template.name() == name)
    }

    /// The unit of its parameter (`COUNT` or `DAYS`); `None` for `always`, which takes none.
    pub fn unit(self) -> Option<&'static str> {
        match self {
            Self::LatestPushed | Self::LatestPulled => Some("COUNT"),
            Self::PushedWithinDays | Self::PulledWithinDays => Some("DAYS"),
            Self::Always => None,
        }
    }

    /// How Harbor's UI words it (`#` is the parameter).
    pub fn display_text(self) -> &'static str {
        match self {
            Self::LatestPushed => "the most recently pushed # artifacts",
            Self::LatestPulled => "the most recently pulled # artifacts",
            Self::PushedWithinDays => "pushed within the last # days",
            Self::PulledWithinDays => "pulled within the last # days",
            Self::Always => "always",
        }
    }
}

/// What a selector's pattern does: Harbor's doublestar decorations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decoration {
    /// A tag selector picking artifacts with a tag that matches.
    #[serde(rename = "matches")]
    Matches,
    /// A tag selector picking artifacts with a tag that does not match.
    #[serde(rename = "excludes")]
    Excludes,
    /// A repository selector picking repositories whose name matches.
    #[serde(rename = "repoMatches")]
    RepoMatches,
    /// A repository selector picking repositories whose name does not match.
    #[serde(rename = "repoExcludes")]
    RepoExcludes,
}

impl Decoration {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Matches => "matches",
            Self::Excludes => "excludes",
            Self::RepoMatches => "repoMatches",
            Self::RepoExcludes => "repoExcludes",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Matches,
            Self::Excludes,
            Self::RepoMatches,
            Self::RepoExcludes,
        ]
        .into_iter()
        .find(|decoration| decoration.as_str() == name)
    }

    /// Whether it picks what does not match.
    pub fn excludes(self) -> bool {
        matches!(self, Self::Excludes | Self::RepoExcludes)
    }

    /// Whether it selects repositories (rather than tags).
    pub fn for_repositories(self) -> bool {
        matches!(self, Self::RepoMatches | Self::RepoExcludes)
    }
}

/// One doublestar selector of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    pub decoration: Decoration,
    /// A [`crate::glob`] pattern; empty matches everything.
    pub pattern: String,
    /// For a tag selector: whether it picks untagged artifacts (Harbor's
    /// `extras: {"untagged": true}`).
    #[serde(default)]
    pub untagged: bool,
}

/// One rule of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionRule {
    pub disabled: bool,
    /// Harbor's `priority`, kept as given.
    #[serde(default)]
    pub priority: i64,
    pub template: RuleTemplate,
    /// The count or the days of the template (0 for `always`).
    pub param: u64,
    /// Applied in order, each to what the one before picked.
    pub tag_selectors: Vec<Selector>,
    /// Which of the project's repositories the rule covers, names without the project;
    /// none: all of them.
    pub repository_selectors: Vec<Selector>,
}

/// A project's retention policy. A project has at most one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    pub id: u64,
    pub project: String,
    pub rules: Vec<RetentionRule>,
    /// Six-field cron expression (seconds first) the policy runs on; `None`: by hand only.
    pub cron: Option<String>,
    /// Unix milliseconds of the last time the schedule started a run (or was set): the next
    /// start is the cron's first time after it.
    #[serde(default)]
    pub fired_ms: u64,
}

/// Where an execution or a task stands: Harbor's job statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetentionStatus {
    Running,
    Success,
    Error,
    /// Stopped by hand before it was done.
    Stopped,
}

impl RetentionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "Running",
            Self::Success => "Success",
            Self::Error => "Error",
            Self::Stopped => "Stopped",
        }
    }
}

/// One run of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionExecution {
    pub id: u64,
    pub policy_id: u64,
    pub project: String,
    /// Started by the policy's schedule (`true`) or by hand.
    pub scheduled: bool,
    /// Report what would be deleted, delete nothing.
    pub dry_run: bool,
    pub status: RetentionStatus,
    pub start_ms: u64,
    pub end_ms: Option<u64>,
    /// The rules as they were when the run started.
    pub rules: Vec<RetentionRule>,
    /// The last repository done (the project's repositories are worked in lexical order).
    pub after: Option<String>,
    /// How many tasks the run has made so far (task ids count from 1).
    pub tasks: u64,
    pub error: Option<String>,
}

impl RetentionExecution {
    pub fn is_running(&self) -> bool {
        self.status == RetentionStatus::Running
    }
}

/// What an execution did to one repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionTask {
    /// From 1 within its execution.
    pub id: u64,
    pub execution_id: u64,
    /// The full name (`project/repository`).
    pub repository: String,
    pub status: RetentionStatus,
    pub start_ms: u64,
    pub end_ms: u64,
    /// Artifacts the repository held.
    pub total: u64,
    /// Artifacts the rules retained (in a dry run: would retain).
    pub retained: u64,
    /// A line per artifact: retained or deleted, with its tags.
    pub log: Vec<String>,
}

/// Where retention policies, executions and tasks are kept.
#[async_trait]
pub trait RetentionStore: Send + Sync + 'static {
    /// Stores a new policy (its `id` ignored) and returns its id (ids grow); `None` when the
    /// project has a policy already.
    async fn create_policy(&self, policy: &RetentionPolicy) -> Result<Option<u64>>;

    /// Replaces a policy (its project stays its own); `false` when there is none.
    async fn update_policy(&self, policy: &RetentionPolicy) -> Result<bool>;

    /// Deletes a policy (its executions stay); `false` when there was none.
    async fn delete_policy(&self, id: u64) -> Result<bool>;

    async fn policy(&self, id: u64) -> Result<Option<RetentionPolicy>>;

    /// The id of the project's policy.
    async fn project_policy(&self, project: &str) -> Result<Option<u64>>;

    /// Every policy, by id.
    async fn policies(&self) -> Result<Vec<RetentionPolicy>>;

    /// Stores a new execution (its `id` ignored) and returns its id (ids grow, across
    /// policies).
    async fn create_execution(&self, execution: &RetentionExecution) -> Result<u64>;

    /// Replaces an execution's record.
    async fn update_execution(&self, execution: &RetentionExecution) -> Result<()>;

    async fn execution(&self, id: u64) -> Result<Option<RetentionExecution>>;

    /// Up to `limit` of a policy's executions, newest first, skipping `skip`; and how many
    /// it has.
    async fn executions(
        &self,
        policy_id: u64,
        skip: usize,
        limit: usize,
    ) -> Result<(Vec<RetentionExecution>, usize)>;

    /// The executions that are running, oldest first.
    async fn running_executions(&self) -> Result<Vec<RetentionExecution>>;

    /// Stores a task (replacing one with its execution and id).
    async fn put_task(&self, task: &RetentionTask) -> Result<()>;

    async fn task(&self, execution_id: u64, id: u64) -> Result<Option<RetentionTask>>;

    /// Up to `limit` of an execution's tasks, by id, skipping `skip`; and how many it has.
    async fn tasks(
        &self,
        execution_id: u64,
        skip: usize,
        limit: usize,
    ) -> Result<(Vec<RetentionTask>, usize)>;
}
