//! Tag retention's use cases: a project's policy created, read, changed and deleted; runs
//! started by hand (or dry) and stopped; the runs and their per-repository tasks read; and
//! the work itself, carried out in bounded steps (a repository each) either by
//! [`RetentionRunner`] in the background of `berth serve`, or by [`Retention::tick`] from the
//! maintenance Lambda function, which also starts the runs whose schedule came due.
//!
//! Who may: [`Permission::TagRetention`] of the policy's project, checked here once the
//! project is known (from the body, or from the policy the path names).

mod engine;

use std::sync::Arc;
use std::time::Duration;

use berth_core::ports::MetadataStore;
use berth_core::retention::rules::validate;
use berth_core::retention::{
    RetentionExecution, RetentionPolicy, RetentionRule, RetentionStatus, RetentionStore,
    RetentionTask,
};
use berth_core::schedule;
use berth_core::statistics::StatisticsStore;
use berth_core::{ErrorCode, Event, EventKind, EventSink, Registry, RegistryError, Result};
use tokio::sync::Notify;

use self::engine::Engine;
pub use self::engine::{ImmutabilityCheck, retention_context};
use crate::accounts::Accounts;
use crate::artifacts::PageRequest;
use crate::permission::{Caller, Permission, bad_request, not_found};

/// Unix milliseconds now, or what a test says it is.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// How long the runner waits after a failure before it looks again.
const RETRY_PAUSE: Duration = Duration::from_secs(5);
/// How often the runner looks at the schedules when nothing wakes it.
const SCHEDULE_TICK: Duration = Duration::from_secs(30);

/// A policy as the API states it (the id comes from the path, or is given on creation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    pub project: String,
    pub rules: Vec<RetentionRule>,
    /// Six-field cron; `None` (or empty): by hand only.
    pub cron: Option<String>,
}

/// Tag retention over one registry.
pub struct Retention {
    engine: Engine,
    events: Option<Arc<dyn EventSink>>,
    wake: Notify,
}

impl std::fmt::Debug for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retention").finish_non_exhaustive()
    }
}

impl Retention {
    /// Retention over `store`, reading repositories from `metadata` and deleting through
    /// `registry` (which publishes the deletions).
    pub fn new(
        store: Arc<dyn RetentionStore>,
        metadata: Arc<dyn MetadataStore>,
        registry: Arc<Registry>,
    ) -> Self {
        Self {
            engine: Engine {
                store,
                metadata,
                registry,
                statistics: None,
                immutability: None,
                clock: Arc::new(berth_core::gc::now_ms),
            },
            events: None,
            wake: Notify::new(),
        }
    }

    /// Reads the artifacts' push and pull times from `statistics` (without, every artifact
    /// counts as pushed and pulled never).
    pub fn with_statistics(mut self, statistics: Arc<dyn StatisticsStore>) -> Self {
        self.engine.statistics = Some(statistics);
        self
    }

    /// Keeps the artifacts `check` says are immutable.
    pub fn with_immutability(mut self, check: Arc<dyn ImmutabilityCheck>) -> Self {
        self.engine.immutability = Some(check);
        self
    }

    /// Publishes the end of each run (a maintenance event) to `events`.
    pub fn with_events(mut self, events: Arc<dyn EventSink>) -> Self {
        self.events = Some(events);
        self
    }

    /// Takes the time from `clock` (for tests that push and pull at known times).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.engine.clock = clock;
        self
    }

    fn now(&self) -> u64 {
        (self.engine.clock)()
    }

    fn store(&self) -> &dyn RetentionStore {
        self.engine.store.as_ref()
    }

    // --- policies ------------------------------------------------------------------------

    /// The id of the project's policy (Harbor's project metadata `retention_id`).
    pub async fn project_policy(&self, project: &str) -> Result<Option<u64>> {
        self.store().project_policy(project).await
    }

    fn checked(spec: &PolicySpec) -> Result<Option<String>> {
        validate(&spec.rules)?;
        let cron = spec.cron.clone().filter(|cron| !cron.trim().is_empty());
        if let Some(cron) = &cron {
            schedule::parse(cron)?;
        }
        Ok(cron)
    }

    /// Creates the project's policy; a project has one at most.
    pub async fn create_policy(
        &self,
        accounts: &Accounts,
        caller: &Caller,
        spec: PolicySpec,
    ) -> Result<u64> {
        accounts
            .authorize(caller, &Permission::TagRetention(spec.project.clone()))
            .await?;
        let cron = Self::checked(&spec)?;
        let policy = RetentionPolicy {
            id: 0,
            project: spec.project,
            rules: spec.rules,
            cron,
            fired_ms: self.now(),
        };
        match self.store().create_policy(&policy).await? {
            Some(id) => {
                self.wake.notify_one();
                Ok(id)
            }
            None => {
                let existing = self.store().project_policy(&policy.project).await?;
                Err(bad_request(format!(
                    "project {:?} already has retention policy {}: change that one",
                    policy.project,
                    existing.unwrap_or_default()
                )))
            }
        }
    }

    /// Deletes the policy of a project that was just deleted (the caller was allowed to
    /// delete the project), so that a new project of the same name starts without one.
    pub async fn forget_project(&self, project: &str) -> Result<()> {
        if let Some(id) = self.store().project_policy(project).await? {
            self.store().delete_policy(id).await?;
        }
        Ok(())
    }

    /// Policy `id`, which the caller must be allowed to manage.
    pub async fn policy(
        &self,
        accounts: &Accounts,
        caller: &Caller,
        id: u64,
    ) -> Result<RetentionPolicy> {
        let policy = self
            .store()
            .policy(id)
            .await?
            .ok_or_else(|| not_found(&format!("retention policy {id}")))?;
        accounts
            .authorize(caller, &Permission::TagRetention(policy.project.clone()))
            .await
            .map_err(|error| match error.code() {
                ErrorCode::NotFound => not_found(&format!("retention policy {id}")),
                _ => error,
            })?;
        Ok(policy)
    }

    /// Replaces policy `id`'s rules and schedule; its project stays.
    pub async fn update_policy(
        &self,
        accounts: &Accounts,
        caller: &Caller,
        id: u64,
        spec: PolicySpec,
    ) -> Result<()> {
        let old = self.policy(accounts, caller, id).await?;
        if spec.project != old.project {
            return Err(bad_request(format!(
                "retention policy {id} belongs to project {:?}; its scope cannot change",
                old.project
            )));
        }
        let cron = Self::checked(&spec)?;
        let fired_ms = if cron == old.cron {
            old.fired_ms
        } else {
            self.now()
        };
        let policy = RetentionPolicy {
            id,
            project: old.project,
            rules: spec.rules,
            cron,
            fired_ms,
        };
        if !self.store().update_policy(&policy).await? {
            return Err(not_found(&format!("retention policy {id}")));
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Deletes policy `id`; its runs stay readable by whoever may read the project's.
    pub async fn delete_policy(&self, accounts: &Accounts, caller: &Caller, id: u64) -> Result<()> {
        self.policy(accounts, caller, id).await?;
        if !self.store().delete_policy(id).await? {
            return Err(not_found(&format!("retention policy {id}")));
        }
        Ok(())
    }

    // --- executions ----------------------------------------------------------------------

    /// Starts a run of policy `id` by hand; a dry run deletes nothing. Refused while one of
    /// the policy's runs is going.
    pub async fn start(
        &self,
        accounts: &Accounts,
        caller: &Caller,
        id: u64,
        dry_run: bool,
    ) -> Result<u64> {
        let policy = self.policy(accounts, caller, id).await?;
        self.begin(&policy, false, dry_run).await
    }

    async fn begin(&self, policy: &RetentionPolicy, scheduled: bool, dry_run: bool) -> Result<u64> {
        if let Some(running) = self
            .store()
            .running_executions()
            .await?
            .into_iter()
            .find(|execution| execution.policy_id == policy.id)
        {
            return Err(RegistryError::new(
                ErrorCode::Conflict,
                format!(
                    "retention execution {} of policy {} is still going",
                    running.id, policy.id
                ),
            ));
        }
        let execution = RetentionExecution {
            id: 0,
            policy_id: policy.id,
            project: policy.project.clone(),
            scheduled,
            dry_run,
            status: RetentionStatus::Running,
            start_ms: self.now(),
            end_ms: None,
            rules: policy.rules.clone(),
            after: None,
            tasks: 0,
            error: None,
        };
        let id = self.store().create_execution(&execution).await?;
        self.wake.notify_one();
        Ok(id)
    }

    /// Execution `eid` of policy `id`.
    pub async fn execution(
        &self,
        accounts: &Accounts,
        caller: &Caller,
        id: u64,
        eid: u64,
    ) -> Result<RetentionExecution> {
        self.policy(accounts, caller, id).await?;
        self.store()
            .execution(eid)
            .await?
            .filter(|execution| execution.policy_id == id)
            .ok_or_else(|| not_found(&format!("retention execution {eid} of policy {id}")))
    }

    /// A page of policy `id`'s runs, newest first, and how many there are.
    pub async fn executions(
        &self,
        accounts: &Accounts,
        caller: &Caller,
        id: u64,
        page: PageRequest,
    ) -> Result<(Vec<RetentionExecution>, usize)> {
        self.policy(accounts, caller, id).await?;
        let skip = (page.page.max(1) - 1).saturating_mul(page.page_size);
        self.store().executions(id, skip, page.page_size).await
    }

    /// Stops execution `eid` of policy `id`: the repository being done is finished, no other
    /// is started. Stopping a run that has ended changes nothing.
    pub async fn stop(
        &self,
        accounts: &Accounts,
        caller: &Caller,
        id: u64,
        eid: u64,
    ) -> Result<()> {
        let mut execution = self.execution(accounts, caller, id, eid).await?;
        if execution.is_running() {
            execution.status = RetentionStatus::Stopped;
            execution.end_ms = Some(self.now());
            self.store().update_execution(&execution).await?;
            self.finished(&execution);
        }
        Ok(())
    }

    /// A page of execution `eid`'s tasks (one per repository), and how many there are.
    pub async fn tasks(
        &self,
        accounts: &Accounts,
        caller: &Caller,
        id: u64,
        eid: u64,
        page: PageRequest,
    ) -> Result<(Vec<RetentionTask>, usize)> {
        self.execution(accounts, caller, id, eid).await?;
        let skip = (page.page.max(1) - 1).saturating_mul(page.page_size);
        self.store().tasks(eid, skip, page.page_size).await
    }

    /// Task `tid` of execution `eid`, with its log.
    pub async fn task(
        &self,
        accounts: &Accounts,
        caller: &Caller,
        id: u64,
        eid: u64,
        tid: u64,
    ) -> Result<RetentionTask> {
        self.execution(accounts, caller, id, eid).await?;
        self.store()
            .task(eid, tid)
            .await?
            .ok_or_else(|| not_found(&format!("task {tid} of retention execution {eid}")))
    }

    // --- the work ------------------------------------------------------------------------

    /// Carries the running executions on, a repository a step, for at most `max_steps`
    /// steps in all (to their ends without a limit). Returns whether one is still going.
    pub async fn work(&self, max_steps: Option<usize>) -> Result<bool> {
        let mut steps = 0;
        loop {
            let running = self.store().running_executions().await?;
            let Some(mut execution) = running.into_iter().next() else {
                return Ok(false);
            };
            if max_steps.is_some_and(|max| steps >= max) {
                return Ok(true);
            }
            steps += 1;
            if let Err(error) = self.engine.step(&mut execution, self.now()).await {
                execution.status = RetentionStatus::Error;
                execution.error = Some(error.to_string());
                execution.end_ms = Some(self.now());
                self.store().update_execution(&execution).await?;
                self.finished(&execution);
                return Err(error);
            }
            if !execution.is_running() {
                self.finished(&execution);
            }
        }
    }

    fn finished(&self, execution: &RetentionExecution) {
        tracing::info!(
            execution = execution.id,
            policy = execution.policy_id,
            project = execution.project,
            status = execution.status.as_str(),
            tasks = execution.tasks,
            dry_run = execution.dry_run,
            "retention run ended"
        );
        if let Some(events) = &self.events {
            events.publish(&Event::now(
                &retention_context(execution.id),
                EventKind::MaintenanceRun {
                    job: "retention".to_owned(),
                    status: execution.status.as_str().to_owned(),
                },
            ));
        }
    }

    /// Starts the runs of the policies whose schedule came due since it last fired.
    pub async fn start_due(&self) -> Result<()> {
        let now = self.now();
        let seconds = |ms: u64| i64::try_from(ms / 1000).unwrap_or(i64::MAX);
        for mut policy in self.store().policies().await? {
            let Some(cron) = policy.cron.as_deref() else {
                continue;
            };
            let parsed = schedule::parse(cron)?;
            if schedule::due(&parsed, seconds(policy.fired_ms), seconds(now)).is_none() {
                continue;
            }
            policy.fired_ms = now;
            self.store().update_policy(&policy).await?;
            match self.begin(&policy, true, false).await {
                Ok(_) => {}
                // The run before is still going: this time is skipped.
                Err(error) if error.code() == ErrorCode::Conflict => {
                    tracing::warn!(policy = policy.id, %error, "a scheduled retention run is skipped");
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// One invocation's work where nothing runs in the background (the maintenance Lambda
    /// function): starts the runs that came due, then carries the running ones on for at
    /// most `max_steps` repositories. Returns whether one is still going.
    pub async fn tick(&self, max_steps: usize) -> Result<bool> {
        self.start_due().await?;
        self.work(Some(max_steps)).await
    }
}

/// Runs tag retention in the background of this process.
#[derive(Debug)]
pub struct RetentionRunner;

impl RetentionRunner {
    /// Starts the background task: it carries out each run started (resuming one a restart
    /// cut short) and starts the scheduled ones.
    pub fn spawn(retention: Arc<Retention>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if let Err(error) = retention.start_due().await {
                    tracing::error!(%error, "retention schedules");
                }
                if let Err(error) = retention.work(None).await {
                    tracing::error!(%error, "a retention run failed");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                tokio::select! {
                    () = retention.wake.notified() => {}
                    () = tokio::time::sleep(SCHEDULE_TICK) => {}
                }
            }
        })
    }
}
