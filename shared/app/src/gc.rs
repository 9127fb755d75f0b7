//! Garbage collection's use cases: starting a run (by hand or on the schedule), reading the
//! runs and their logs, setting the schedule; and [`GcRunner`], which carries runs out in
//! the background of one process (`berth serve`), step by step, its progress saved after
//! each step so that a run cut short by a restart resumes.

use std::sync::Arc;
use std::time::Duration;

use berth_core::gc::{
    Collector, GcHistory, GcOptions, GcProgress, GcRun, GcSchedule, GcStatus, now_ms,
};
use berth_core::schedule;
use berth_core::{ErrorCode, Event, EventKind, EventSink, RegistryError, Result};
use tokio::sync::Notify;

use crate::permission::{Caller, bad_request, not_found};

/// Candidates a step visits.
pub const STEP_BUDGET: usize = 500;
/// How long the runner waits after a failure before it looks again.
const RETRY_PAUSE: Duration = Duration::from_secs(5);
/// How often the runner looks at the schedule when nothing wakes it.
const SCHEDULE_TICK: Duration = Duration::from_secs(30);

/// The schedule kinds Harbor offers, with their cron expressions.
const SCHEDULE_KINDS: [(&str, &str); 3] = [
    ("Hourly", "0 0 * * * *"),
    ("Daily", "0 0 0 * * *"),
    ("Weekly", "0 0 0 * * 0"),
];

/// Garbage collection over one registry.
pub struct GarbageCollection {
    collector: Collector,
    history: Arc<dyn GcHistory>,
    /// Milliseconds a blob stays safe after it was uploaded or linked.
    grace_ms: u64,
    events: Option<Arc<dyn EventSink>>,
    wake: Notify,
    /// Candidates a step visits.
    step_budget: usize,
}

impl std::fmt::Debug for GarbageCollection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GarbageCollection")
            .field("grace_ms", &self.grace_ms)
            .finish_non_exhaustive()
    }
}

/// A schedule as the API states it: Harbor's kind, a cron expression for `Custom`, and the
/// run options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRequest {
    pub kind: String,
    pub cron: Option<String>,
    pub dry_run: bool,
    pub delete_untagged: bool,
}

impl GarbageCollection {
    pub fn new(collector: Collector, history: Arc<dyn GcHistory>, grace: Duration) -> Self {
        Self {
            collector,
            history,
            grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            events: None,
            wake: Notify::new(),
            step_budget: STEP_BUDGET,
        }
    }

    /// Visits `budget` candidates a step instead of [`STEP_BUDGET`].
    pub fn with_step_budget(mut self, budget: usize) -> Self {
        self.step_budget = budget.max(1);
        self
    }

    /// Publishes the end of each run (a maintenance event) to `events`.
    pub fn with_events(mut self, events: Arc<dyn EventSink>) -> Self {
        self.events = Some(events);
        self
    }

    fn options(&self, dry_run: bool, delete_untagged: bool) -> GcOptions {
        GcOptions {
            dry_run,
            delete_untagged,
            grace_ms: self.grace_ms,
        }
    }

    /// Starts a run now (the edge has checked the caller is a system administrator).
    /// Refused while another run is going: runs do not overlap.
    pub async fn start(
        &self,
        _caller: &Caller,
        dry_run: bool,
        delete_untagged: bool,
    ) -> Result<u64> {
        self.begin(false, self.options(dry_run, delete_untagged))
            .await
    }

    async fn begin(&self, scheduled: bool, options: GcOptions) -> Result<u64> {
        if !self.collector.ready().await? {
            return Err(RegistryError::new(
                ErrorCode::Unsupported,
                "the blob references of this registry's data are not counted yet: run \
                 `berth init` with the registry's storage (while no pushes run), then start \
                 garbage collection again",
            ));
        }
        if let Some(running) = self.running().await? {
            return Err(RegistryError::new(
                ErrorCode::Conflict,
                format!("garbage collection run {} is still going", running.id),
            ));
        }
        let now = now_ms();
        let id = self
            .history
            .create_run(scheduled, &GcProgress::new(options, now), now)
            .await?;
        self.wake.notify_one();
        Ok(id)
    }

    /// The run that has not ended, if any.
    async fn running(&self) -> Result<Option<GcRun>> {
        let (recent, _) = self.history.runs(0, 1).await?;
        Ok(recent
            .into_iter()
            .find(|run| run.status == GcStatus::Running))
    }

    /// The bytes of the blobs the registry stores (Harbor's `total_storage_consumption`).
    pub async fn stored_bytes(&self) -> Result<u64> {
        self.collector.stored_bytes().await
    }

    /// Page `page` (from 1) of `size` runs, newest first, and how many there are.
    pub async fn runs(&self, page: usize, size: usize) -> Result<(Vec<GcRun>, usize)> {
        self.history
            .runs((page.max(1) - 1).saturating_mul(size), size)
            .await
    }

    pub async fn run(&self, id: u64) -> Result<GcRun> {
        self.history
            .run(id)
            .await?
            .ok_or_else(|| not_found(&format!("garbage collection run {id}")))
    }

    /// The schedule (kind `None` when there is none).
    pub async fn schedule(&self) -> Result<GcSchedule> {
        Ok(self.history.schedule().await?.unwrap_or(GcSchedule {
            kind: "None".to_owned(),
            cron: None,
            options: self.options(false, false),
            fired_ms: 0,
        }))
    }

    /// Sets the schedule, or with kind `Manual` starts a run now (returning its id).
    pub async fn set_schedule(
        &self,
        caller: &Caller,
        request: ScheduleRequest,
    ) -> Result<Option<u64>> {
        let options = self.options(request.dry_run, request.delete_untagged);
        let cron = match request.kind.as_str() {
            "Manual" => {
                return self
                    .start(caller, request.dry_run, request.delete_untagged)
                    .await
                    .map(Some);
            }
            "None" => None,
            "Custom" => {
                let cron = request
                    .cron
                    .ok_or_else(|| bad_request("a Custom schedule needs its cron"))?;
                schedule::parse(&cron)?;
                Some(cron)
            }
            kind => Some(
                SCHEDULE_KINDS
                    .iter()
                    .find(|(name, _)| *name == kind)
                    .map(|(_, cron)| (*cron).to_owned())
                    .ok_or_else(|| {
                        bad_request(format!(
                            "schedule type {kind:?}: Berth knows Manual, None, Hourly, Daily, \
                             Weekly and Custom"
                        ))
                    })?,
            ),
        };
        self.history
            .set_schedule(&GcSchedule {
                kind: request.kind,
                cron,
                options,
                fired_ms: now_ms(),
            })
            .await?;
        self.wake.notify_one();
        Ok(None)
    }

    /// Carries the run that has not ended on, saving its progress after each step: to its
    /// end, or for at most `max_steps` steps. Returns whether there was one.
    pub async fn work(&self, max_steps: Option<usize>) -> Result<bool> {
        let Some(mut run) = self.running().await? else {
            return Ok(false);
        };
        let mut steps = 0;
        while !run.progress.is_done() {
            if max_steps.is_some_and(|max| steps >= max) {
                return Ok(true);
            }
            steps += 1;
            match self
                .collector
                .step(&mut run.progress, self.step_budget)
                .await
            {
                Ok(()) => {
                    run.updated_ms = now_ms();
                    self.history.update_run(&run).await?;
                }
                Err(error) => {
                    run.status = GcStatus::Error;
                    run.error = Some(error.to_string());
                    run.progress.log.push(format!("stopped: {error}"));
                    run.updated_ms = now_ms();
                    self.history.update_run(&run).await?;
                    self.finished(&run);
                    return Err(error);
                }
            }
        }
        run.status = GcStatus::Success;
        run.updated_ms = now_ms();
        self.history.update_run(&run).await?;
        self.finished(&run);
        Ok(true)
    }

    fn finished(&self, run: &GcRun) {
        tracing::info!(
            run = run.id,
            status = run.status.as_str(),
            blobs = run.progress.blobs_deleted,
            bytes = run.progress.bytes_freed,
            manifests = run.progress.manifests_deleted,
            dry_run = run.progress.options.dry_run,
            "garbage collection run ended"
        );
        if let Some(events) = &self.events {
            events.publish(&Event::now(
                &berth_core::gc::gc_context(),
                EventKind::MaintenanceRun {
                    job: "gc".to_owned(),
                    status: run.status.as_str().to_owned(),
                },
            ));
        }
    }

    /// Starts the scheduled run if its time came since the schedule last fired.
    async fn start_if_due(&self) -> Result<()> {
        let now = now_ms();
        let Some(mut scheduled) = self.history.schedule().await? else {
            return Ok(());
        };
        let Some(cron) = scheduled.cron.as_deref() else {
            return Ok(());
        };
        let parsed = schedule::parse(cron)?;
        let seconds = |ms: u64| i64::try_from(ms / 1000).unwrap_or(i64::MAX);
        if schedule::due(&parsed, seconds(scheduled.fired_ms), seconds(now)).is_some() {
            scheduled.fired_ms = now;
            self.history.set_schedule(&scheduled).await?;
            if self.running().await?.is_none() {
                self.begin(true, scheduled.options).await?;
            }
        }
        Ok(())
    }

    /// One invocation's work where nothing runs in the background (the `gc` Lambda
    /// function): starts the scheduled run if due, then carries the run that has not ended
    /// on for at most `max_steps` steps. Returns whether a run is still going.
    pub async fn tick(&self, max_steps: usize) -> Result<bool> {
        self.start_if_due().await?;
        self.work(Some(max_steps)).await?;
        Ok(self.running().await?.is_some())
    }
}

/// Runs garbage collection in the background of this process.
#[derive(Debug)]
pub struct GcRunner;

impl GcRunner {
    /// Starts the background task: it resumes a run a restart cut short, carries out each
    /// run started, and starts the scheduled ones.
    pub fn spawn(gc: Arc<GarbageCollection>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if let Err(error) = gc.work(None).await {
                    tracing::error!(%error, "garbage collection run failed");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                if let Err(error) = gc.start_if_due().await {
                    tracing::error!(%error, "garbage collection schedule");
                }
                if gc.running().await.ok().flatten().is_some() {
                    continue;
                }
                tokio::select! {
                    () = gc.wake.notified() => {}
                    () = tokio::time::sleep(SCHEDULE_TICK) => {}
                }
            }
        })
    }
}
