//! The replicator: starts executions (by hand, on events, on schedule), plans their tasks,
//! and runs each task, the same way in `berth serve` (an in-process queue) and in Lambda (a
//! queue between invocations). Work is described by [`Job`]s small enough for a queue
//! message; whoever carries them implements [`Dispatch`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use berth_core::accounts::{Project, validate_project_name};
use berth_core::replication::{
    Direction, Execution, IdKind, Operation, Policy, RegistryEndpoint, ReplicationStore, Task,
    TaskStatus, Trigger, TriggerKind,
};
use berth_core::{
    AccountStore, ErrorCode, EventKind, EventSink, Registry, RegistryError, RequestContext, Result,
};
use serde::{Deserialize, Serialize};

use crate::copy::{CopyJob, MountHints, copy_artifact};
use crate::ends::{CopyError, End, LocalEnd};
use crate::remote::{Ping, RemoteConfig, RemoteRegistry};
use crate::rules::{Selector, destination_repository};
use crate::schedule;
use crate::secrets::SecretBox;

/// How many times a task is tried when the remote is unreachable or overloaded.
pub const MAX_ATTEMPTS: u32 = 3;
/// How long an attempt may run before a redelivered job may take the task over: longer than
/// a Lambda invocation may last (15 minutes). A job for a task still running after that is
/// a redelivery after its worker timed out or crashed.
pub const TASK_LEASE_SECONDS: u64 = 20 * 60;

/// One unit of replication work, as a queue carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum Job {
    /// List what an execution copies, make its tasks and dispatch them.
    Plan { execution: u64 },
    /// Run one task.
    Task { execution: u64, task: u64 },
    /// Something happened in this registry: start the event-based policies it matches.
    Event(Event),
}

/// A registry event, in a form a queue message can carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Pushed {
        repository: String,
        digest: String,
        tag: Option<String>,
    },
    ManifestDeleted {
        repository: String,
        digest: String,
    },
    TagDeleted {
        repository: String,
        tag: String,
    },
}

impl Event {
    /// The replication event of a registry event, for those that start event-based policies.
    pub fn of(event: &berth_core::Event) -> Option<Self> {
        Some(match &event.kind {
            EventKind::ManifestPushed {
                repository,
                digest,
                tag,
                ..
            } => Self::Pushed {
                repository: repository.as_str().to_owned(),
                digest: digest.to_string(),
                tag: tag.as_ref().map(|t| t.as_str().to_owned()),
            },
            EventKind::ManifestDeleted { repository, digest } => Self::ManifestDeleted {
                repository: repository.as_str().to_owned(),
                digest: digest.to_string(),
            },
            EventKind::TagDeleted { repository, tag } => Self::TagDeleted {
                repository: repository.as_str().to_owned(),
                tag: tag.as_str().to_owned(),
            },
            _ => return None,
        })
    }
}

/// Carries jobs to whoever runs them, after `delay`.
#[async_trait]
pub trait Dispatch: Send + Sync + 'static {
    async fn dispatch(&self, job: Job, delay: Duration) -> Result<()>;
}

/// A job that failed every attempt its carrier gave it (in AWS, a message in the
/// dead-letter queue). Task failures are not dead letters: they end in the task's status;
/// these are jobs that could not even record a result (the table unreachable, say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// The carrier's id of the message.
    pub id: String,
    /// The job as it was queued (JSON).
    pub body: String,
    /// How many times it was tried.
    pub attempts: u32,
    /// The last error, when the carrier knows it.
    pub error: Option<String>,
    /// Unix seconds of the first attempt, when known.
    pub first_attempt: Option<u64>,
}

/// Where dead letters can be read.
#[async_trait]
pub trait DeadLetters: Send + Sync + 'static {
    /// Up to `limit` dead letters, oldest first.
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>>;
}

/// What a job's handler asks of its carrier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// The task failed in a way a later attempt may not; it was re-dispatched after a delay.
    Retrying(Duration),
}

/// An execution as the API shows it: its status and counts computed from its tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionView {
    pub execution: Execution,
    pub status: &'static str,
    pub status_text: String,
    pub total: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub in_progress: usize,
    pub stopped: usize,
    pub end_time: Option<u64>,
}

/// Runs replication for one registry.
pub struct Replicator {
    store: Arc<dyn ReplicationStore>,
    local: LocalEnd,
    secrets: Arc<dyn SecretBox>,
    dispatch: Arc<dyn Dispatch>,
    /// Delay before the second attempt; each later one waits four times longer.
    retry_base: Duration,
    /// A chunk size to force on remote uploads (tests; remotes behind a payload limit).
    chunk_size: Option<u64>,
    /// Where pull replication makes the projects it copies into (none: it does not).
    accounts: Option<Arc<dyn AccountStore>>,
    /// Per endpoint, where blobs were seen in it: later copies mount instead of sending.
    hints: std::sync::Mutex<std::collections::HashMap<u64, Arc<MountHints>>>,
    /// Where the end of each execution is published.
    events: Option<Arc<dyn EventSink>>,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator").finish_non_exhaustive()
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn not_found(what: String) -> RegistryError {
    RegistryError::new(ErrorCode::NotFound, format!("{what} not found"))
}

impl Replicator {
    pub fn new(
        store: Arc<dyn ReplicationStore>,
        registry: Arc<Registry>,
        secrets: Arc<dyn SecretBox>,
        dispatch: Arc<dyn Dispatch>,
    ) -> Self {
        Self {
            store,
            local: LocalEnd::new(registry),
            secrets,
            dispatch,
            retry_base: Duration::from_secs(5),
            chunk_size: None,
            hints: std::sync::Mutex::default(),
            events: None,
            accounts: None,
        }
    }

    /// Pull replication makes the destination project (private, owned by `admin`) when it
    /// does not exist, as Harbor does; without accounts (a registry without auth) there are
    /// no projects to make.
    pub fn with_accounts(mut self, accounts: Arc<dyn AccountStore>) -> Self {
        self.accounts = Some(accounts);
        self
    }

    /// Publishes the end of each execution (a `ReplicationRun` event) to `events`. Each
    /// settled job then reads its execution's tasks to tell whether it was the last.
    pub fn with_events(mut self, events: Arc<dyn EventSink>) -> Self {
        self.events = Some(events);
        self
    }

    /// Publishes the execution's end, if it has ended. Two workers settling its last tasks
    /// at once may both publish it: the event's request id (the execution's) makes it one
    /// audit entry.
    async fn publish_if_ended(&self, execution_id: u64) -> Result<()> {
        let Some(events) = &self.events else {
            return Ok(());
        };
        let Some(execution) = self.store.execution(execution_id).await? else {
            return Ok(());
        };
        let view = self.view(execution).await?;
        if view.status == "InProgress" {
            return Ok(());
        }
        let policy = self.store.policy(view.execution.policy_id).await?;
        // This registry's side of each copy: the sources of a push, the destinations of a pull.
        let mut projects: Vec<String> = self
            .store
            .tasks(execution_id)
            .await?
            .iter()
            .map(
                |task| match policy.as_ref().map(|policy| policy.direction) {
                    Some(Direction::Pull) => {
                        berth_core::audit::project_of(&task.destination_repository)
                    }
                    _ => berth_core::audit::project_of(&task.source_repository),
                },
            )
            .collect();
        projects.sort();
        projects.dedup();
        let policy = match policy {
            Some(policy) => policy.name,
            None => view.execution.policy_id.to_string(),
        };
        let context = RequestContext::system(
            "replication",
            format!("replication-execution-{execution_id}"),
        );
        events.publish(&berth_core::Event::now(
            &context,
            EventKind::ReplicationRun {
                policy,
                execution: execution_id,
                status: view.status.to_owned(),
                projects,
            },
        ));
        Ok(())
    }

    async fn ensure_project(&self, repository: &str) -> Result<()> {
        let Some(accounts) = &self.accounts else {
            return Ok(());
        };
        let name = repository.split('/').next().unwrap_or(repository);
        if accounts.project(name).await?.is_some() {
            return Ok(());
        }
        validate_project_name(name)?;
        let project = Project {
            name: name.to_owned(),
            public: false,
            owner: "admin".to_owned(),
            created_at: unix_now(),
            immutable_tags: Default::default(),
        };
        if accounts.create_project(&project).await? {
            tracing::info!(project = name, "project made for pull replication");
        }
        Ok(())
    }

    fn mount_hints(&self, endpoint: u64) -> Arc<MountHints> {
        self.hints
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(endpoint)
            .or_default()
            .clone()
    }

    /// Waits `base` before the second attempt of a failed task (then 4×, 16×...).
    pub fn with_retry_base(mut self, base: Duration) -> Self {
        self.retry_base = base;
        self
    }

    pub fn store(&self) -> &Arc<dyn ReplicationStore> {
        &self.store
    }

    pub fn secrets(&self) -> &Arc<dyn SecretBox> {
        &self.secrets
    }

    // --- endpoints ----------------------------------------------------------------------

    /// A client for an endpoint, its credential opened.
    pub async fn remote(&self, endpoint: &RegistryEndpoint) -> Result<RemoteRegistry> {
        let credential = match &endpoint.credential {
            Some(sealed) => Some((
                sealed.access_key.clone(),
                self.secrets.open(&sealed.sealed_secret).await?,
            )),
            None => None,
        };
        let remote = RemoteRegistry::new(RemoteConfig {
            url: endpoint.url.clone(),
            insecure: endpoint.insecure,
            credential,
        })
        .map_err(|e| RegistryError::new(ErrorCode::BadRequest, e.to_string()))?;
        Ok(remote.with_chunk_size(self.chunk_size))
    }

    /// Whether the endpoint answers and takes its credentials.
    pub async fn ping(&self, endpoint: &RegistryEndpoint) -> Result<Ping> {
        Ok(self.remote(endpoint).await?.ping().await)
    }

    async fn endpoint(&self, id: u64) -> Result<RegistryEndpoint> {
        self.store
            .registry(id)
            .await?
            .ok_or_else(|| not_found(format!("registry {id}")))
    }

    // --- starting executions ------------------------------------------------------------

    /// Starts an execution of `policy` and returns it at once; its tasks are planned and
    /// run by the dispatched jobs.
    pub async fn start(&self, policy: &Policy, trigger: TriggerKind) -> Result<Execution> {
        let execution = self.new_execution(policy, trigger, false).await?;
        self.dispatch
            .dispatch(
                Job::Plan {
                    execution: execution.id,
                },
                Duration::ZERO,
            )
            .await?;
        Ok(execution)
    }

    async fn new_execution(
        &self,
        policy: &Policy,
        trigger: TriggerKind,
        planned: bool,
    ) -> Result<Execution> {
        let execution = Execution {
            id: self.store.next_id(IdKind::Execution).await?,
            policy_id: policy.id,
            trigger,
            start_time: unix_now(),
            planned,
            error: None,
            stop_requested: false,
        };
        self.store.put_execution(&execution).await?;
        tracing::info!(
            execution = execution.id,
            policy = policy.id,
            ?trigger,
            "replication execution started"
        );
        Ok(execution)
    }

    /// Runs one job; the carrier calls this for every job it receives.
    pub async fn handle(&self, job: Job) -> Result<Outcome> {
        match job {
            Job::Plan { execution } => {
                self.plan(execution).await?;
                self.publish_if_ended(execution).await?;
                Ok(Outcome::Done)
            }
            Job::Task { execution, task } => {
                let outcome = self.run_task(execution, task).await?;
                if matches!(outcome, Outcome::Done) {
                    self.publish_if_ended(execution).await?;
                }
                Ok(outcome)
            }
            Job::Event(event) => self.on_event(event).await.map(|()| Outcome::Done),
        }
    }

    /// Starts the scheduled policies due in `(after, now]` (unix seconds). Two schedulers
    /// seeing the same tick start one execution: the store's claim decides.
    pub async fn tick(&self, after: i64, now: i64) -> Result<Vec<Execution>> {
        let mut started = Vec::new();
        for policy in self.store.policies().await? {
            let Trigger::Scheduled { cron } = &policy.trigger else {
                continue;
            };
            if !policy.enabled {
                continue;
            }
            let schedule = match schedule::parse(cron) {
                Ok(schedule) => schedule,
                Err(e) => {
                    tracing::warn!(policy = policy.id, error = %e, "unusable schedule");
                    continue;
                }
            };
            let Some(fire) = schedule::due(&schedule, after, now) else {
                continue;
            };
            let fire = u64::try_from(fire).unwrap_or(0);
            if self.store.claim_schedule(policy.id, fire).await? {
                started.push(self.start(&policy, TriggerKind::Scheduled).await?);
            }
        }
        Ok(started)
    }

    // --- planning -----------------------------------------------------------------------

    async fn plan(&self, execution_id: u64) -> Result<()> {
        let Some(mut execution) = self.store.execution(execution_id).await? else {
            return Ok(());
        };
        if execution.planned {
            return Ok(());
        }
        let listed = match self.store.policy(execution.policy_id).await? {
            None => Err(format!("policy {} was deleted", execution.policy_id)),
            Some(policy) => self.list_tasks(&policy, &execution).await,
        };
        match listed {
            Ok(tasks) => {
                for task in &tasks {
                    self.store.put_task(task).await?;
                }
                // Read again: a stop may have been asked while the source was listed.
                if let Some(fresh) = self.store.execution(execution_id).await? {
                    execution.stop_requested |= fresh.stop_requested;
                }
                execution.planned = true;
                self.store.put_execution(&execution).await?;
                for task in &tasks {
                    self.dispatch
                        .dispatch(
                            Job::Task {
                                execution: execution.id,
                                task: task.id,
                            },
                            Duration::ZERO,
                        )
                        .await?;
                }
                tracing::info!(execution = execution.id, tasks = tasks.len(), "planned");
            }
            Err(error) => {
                tracing::warn!(execution = execution.id, %error, "planning failed");
                execution.planned = true;
                execution.error = Some(error);
                self.store.put_execution(&execution).await?;
            }
        }
        Ok(())
    }

    /// The tasks of an execution of `policy`: every tag of every repository its filters
    /// select in the source. Errors are for people (they end in the execution's status).
    async fn list_tasks(
        &self,
        policy: &Policy,
        execution: &Execution,
    ) -> std::result::Result<Vec<Task>, String> {
        let selector = Selector::new(&policy.filters).map_err(|e| e.message().to_owned())?;
        let remote;
        let source: &dyn End = match policy.direction {
            Direction::Push => &self.local,
            Direction::Pull => {
                let endpoint = self
                    .endpoint(policy.remote)
                    .await
                    .map_err(|e| e.message().to_owned())?;
                remote = self
                    .remote(&endpoint)
                    .await
                    .map_err(|e| e.message().to_owned())?;
                &remote
            }
        };
        let repositories = match literal_names(policy) {
            Some(names) => names,
            None => source
                .repositories()
                .await
                .map_err(|e| format!("listing the repositories of {}: {e}", source.describe()))?,
        };
        let mut tasks = Vec::new();
        for repository in repositories.iter().filter(|r| selector.repository(r)) {
            let tags = source.tags(repository).await.map_err(|e| {
                format!(
                    "listing the tags of {repository} in {}: {e}",
                    source.describe()
                )
            })?;
            for tag in tags.into_iter().filter(|t| selector.tag(t)) {
                tasks.push(
                    self.new_task(execution, policy, Operation::Copy, repository, tag)
                        .await
                        .map_err(|e| e.message().to_owned())?,
                );
            }
        }
        Ok(tasks)
    }

    async fn new_task(
        &self,
        execution: &Execution,
        policy: &Policy,
        operation: Operation,
        repository: &str,
        reference: String,
    ) -> Result<Task> {
        Ok(Task {
            id: self.store.next_id(IdKind::Task).await?,
            execution_id: execution.id,
            operation,
            source_repository: repository.to_owned(),
            destination_repository: destination_repository(policy, repository),
            reference,
            status: TaskStatus::Pending,
            attempts: 0,
            start_time: None,
            end_time: None,
            error: None,
            bytes: 0,
            note: None,
            attempt_started: None,
        })
    }

    // --- events -------------------------------------------------------------------------

    /// Starts, for each enabled event-based push policy the event matches, an execution of
    /// one task.
    pub async fn on_event(&self, event: Event) -> Result<()> {
        let (repository, reference, operation) = match &event {
            Event::Pushed {
                tag: Some(tag),
                repository,
                ..
            } => (repository, tag.clone(), Operation::Copy),
            // A manifest pushed by digest is an index's child or a referrer: it travels with
            // the tagged artifact that holds it.
            Event::Pushed { tag: None, .. } => return Ok(()),
            Event::ManifestDeleted { repository, digest } => {
                (repository, digest.clone(), Operation::Deletion)
            }
            Event::TagDeleted { repository, tag } => (repository, tag.clone(), Operation::Deletion),
        };
        for policy in self.store.policies().await? {
            if !policy.enabled
                || policy.direction != Direction::Push
                || policy.trigger != Trigger::EventBased
                || (operation == Operation::Deletion && !policy.replicate_deletion)
            {
                continue;
            }
            let Ok(selector) = Selector::new(&policy.filters) else {
                continue;
            };
            // A deleted manifest's tags are gone with it: the destination is asked to delete
            // the digest, which it only has if it was replicated there (by tag filters).
            let by_digest = matches!(event, Event::ManifestDeleted { .. });
            if !selector.repository(repository) || (!by_digest && !selector.tag(&reference)) {
                continue;
            }
            let execution = self
                .new_execution(&policy, TriggerKind::EventBased, true)
                .await?;
            let task = self
                .new_task(
                    &execution,
                    &policy,
                    operation,
                    repository,
                    reference.clone(),
                )
                .await?;
            self.store.put_task(&task).await?;
            self.dispatch
                .dispatch(
                    Job::Task {
                        execution: execution.id,
                        task: task.id,
                    },
                    Duration::ZERO,
                )
                .await?;
        }
        Ok(())
    }

    // --- tasks --------------------------------------------------------------------------

    async fn run_task(&self, execution_id: u64, task_id: u64) -> Result<Outcome> {
        let Some(execution) = self.store.execution(execution_id).await? else {
            return Ok(Outcome::Done);
        };
        let Some(mut task) = self.store.task(execution_id, task_id).await? else {
            return Ok(Outcome::Done);
        };
        let now = unix_now();
        let abandoned = task.status == TaskStatus::Running
            && task
                .attempt_started
                .is_some_and(|started| now.saturating_sub(started) > TASK_LEASE_SECONDS);
        let claimed_from = if abandoned {
            tracing::warn!(
                execution = execution_id,
                task = task_id,
                "a replication task's worker stopped mid-attempt; taking it over"
            );
            TaskStatus::Running
        } else if task.status == TaskStatus::Pending {
            TaskStatus::Pending
        } else {
            // Another worker has it, or it is over: a redelivered job does nothing twice.
            return Ok(Outcome::Done);
        };
        if abandoned && task.attempts >= MAX_ATTEMPTS {
            task.status = TaskStatus::Failed;
            task.error = Some(format!(
                "its worker stopped (timed out or crashed) during each of {} attempts",
                task.attempts
            ));
            task.end_time = Some(now);
            self.store.update_task(&task, TaskStatus::Running).await?;
            return Ok(Outcome::Done);
        }
        if execution.stop_requested {
            task.status = TaskStatus::Stopped;
            task.end_time = Some(now);
            self.store.update_task(&task, claimed_from).await?;
            return Ok(Outcome::Done);
        }
        task.status = TaskStatus::Running;
        task.attempts += 1;
        task.start_time.get_or_insert(now);
        task.attempt_started = Some(now);
        if !self.store.update_task(&task, claimed_from).await? {
            return Ok(Outcome::Done);
        }
        let result = match self.store.policy(execution.policy_id).await? {
            None => Err(CopyError::Invalid(format!(
                "policy {} was deleted",
                execution.policy_id
            ))),
            Some(policy) => self.carry_out(&policy, &task).await,
        };
        match result {
            Ok((bytes, note)) => {
                task.status = TaskStatus::Succeeded;
                task.bytes = bytes;
                task.note = note;
                task.error = None;
                task.end_time = Some(unix_now());
                self.store.update_task(&task, TaskStatus::Running).await?;
                Ok(Outcome::Done)
            }
            Err(error) if error.is_retryable() && task.attempts < MAX_ATTEMPTS => {
                let delay = self.retry_base * 4u32.pow(task.attempts - 1);
                tracing::warn!(
                    execution = execution_id,
                    task = task_id,
                    attempt = task.attempts,
                    %error,
                    "replication task failed; trying again in {delay:?}"
                );
                task.status = TaskStatus::Pending;
                task.error = Some(format!(
                    "attempt {} of {MAX_ATTEMPTS} failed: {error}",
                    task.attempts
                ));
                self.store.update_task(&task, TaskStatus::Running).await?;
                self.dispatch
                    .dispatch(
                        Job::Task {
                            execution: execution_id,
                            task: task_id,
                        },
                        delay,
                    )
                    .await?;
                Ok(Outcome::Retrying(delay))
            }
            Err(error) => {
                tracing::warn!(execution = execution_id, task = task_id, %error, "replication task failed");
                task.status = TaskStatus::Failed;
                task.error = Some(if task.attempts > 1 {
                    format!("failed after {} attempts: {error}", task.attempts)
                } else {
                    error.to_string()
                });
                task.end_time = Some(unix_now());
                self.store.update_task(&task, TaskStatus::Running).await?;
                Ok(Outcome::Done)
            }
        }
    }

    /// Copies or deletes the task's artifact; returns the bytes sent and, when nothing was
    /// done, why.
    async fn carry_out(
        &self,
        policy: &Policy,
        task: &Task,
    ) -> std::result::Result<(u64, Option<String>), CopyError> {
        let endpoint = self.endpoint(policy.remote).await?;
        let remote = self.remote(&endpoint).await?;
        let (source, destination): (&dyn End, &dyn End) = match policy.direction {
            Direction::Push => (&self.local, &remote),
            Direction::Pull => (&remote, &self.local),
        };
        match task.operation {
            Operation::Copy => {
                if policy.direction == Direction::Pull {
                    self.ensure_project(&task.destination_repository).await?;
                }
                let outcome = copy_artifact(
                    source,
                    destination,
                    &CopyJob {
                        source_repo: &task.source_repository,
                        reference: &task.reference,
                        destination_repo: &task.destination_repository,
                        overwrite: policy.overwrite,
                    },
                    &self.mount_hints(endpoint.id),
                )
                .await?;
                let note = if outcome.unchanged {
                    Some(format!(
                        "{} already had {}:{} at {}",
                        destination.describe(),
                        task.destination_repository,
                        task.reference,
                        outcome.digest.map(|d| d.to_string()).unwrap_or_default()
                    ))
                } else if outcome.kept_existing {
                    Some(format!(
                        "{} has {}:{} at another digest; the policy does not overwrite",
                        destination.describe(),
                        task.destination_repository,
                        task.reference
                    ))
                } else {
                    None
                };
                Ok((outcome.bytes, note))
            }
            Operation::Deletion => {
                let deleted = destination
                    .delete_manifest(&task.destination_repository, &task.reference)
                    .await?;
                let note = (!deleted).then(|| {
                    format!(
                        "{} did not have {}:{}",
                        destination.describe(),
                        task.destination_repository,
                        task.reference
                    )
                });
                Ok((0, note))
            }
        }
    }

    // --- reading and stopping -----------------------------------------------------------

    /// An execution with its status and counts.
    pub async fn view(&self, execution: Execution) -> Result<ExecutionView> {
        let tasks = self.store.tasks(execution.id).await?;
        let count = |status: TaskStatus| tasks.iter().filter(|t| t.status == status).count();
        let (succeeded, failed, stopped) = (
            count(TaskStatus::Succeeded),
            count(TaskStatus::Failed),
            count(TaskStatus::Stopped),
        );
        let in_progress = count(TaskStatus::Pending) + count(TaskStatus::Running);
        let (status, status_text) = if let Some(error) = &execution.error {
            ("Failed", error.clone())
        } else if !execution.planned || in_progress > 0 {
            ("InProgress", String::new())
        } else if execution.stop_requested || stopped > 0 {
            ("Stopped", "stopped on request".to_owned())
        } else if failed > 0 {
            (
                "Failed",
                format!("{failed} of {} tasks failed", tasks.len()),
            )
        } else {
            ("Succeed", String::new())
        };
        let end_time = (status != "InProgress").then(|| {
            tasks
                .iter()
                .filter_map(|t| t.end_time)
                .max()
                .unwrap_or(execution.start_time)
        });
        Ok(ExecutionView {
            total: tasks.len(),
            execution,
            status,
            status_text,
            succeeded,
            failed,
            in_progress,
            stopped,
            end_time,
        })
    }

    /// Stops an execution: tasks not yet started never start; running ones finish.
    pub async fn stop(&self, id: u64) -> Result<Execution> {
        let mut execution = self
            .store
            .execution(id)
            .await?
            .ok_or_else(|| not_found(format!("execution {id}")))?;
        execution.stop_requested = true;
        self.store.put_execution(&execution).await?;
        for mut task in self.store.tasks(id).await? {
            if task.status == TaskStatus::Pending {
                task.status = TaskStatus::Stopped;
                task.end_time = Some(unix_now());
                self.store.update_task(&task, TaskStatus::Pending).await?;
            }
        }
        Ok(execution)
    }
}

/// The repositories a policy names outright: when every name filter is a plain name (no
/// glob), the source's catalog is not needed (registries such as Docker Hub have none).
fn literal_names(policy: &Policy) -> Option<Vec<String>> {
    let names: Vec<&berth_core::replication::Filter> = policy
        .filters
        .iter()
        .filter(|f| f.kind == berth_core::replication::FilterKind::Name && !f.pattern.is_empty())
        .collect();
    let [only] = names.as_slice() else {
        return None;
    };
    let plain = !only.exclude && !only.pattern.contains(['*', '?', '[', ']', '{', '}', '\\']);
    plain.then(|| vec![only.pattern.clone()])
}
