//! Replication inside one process (`berth serve`): a queue of jobs worked by a few tasks, the
//! registry's events fed into it, and a scheduler ticking every few seconds.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use berth_core::{EventSink, RegistryError, Result};
use tokio::sync::{Semaphore, mpsc};

use crate::engine::{DeadLetter, DeadLetters, Dispatch, Event, Job, Replicator, unix_now};

/// How often the local scheduler looks for due schedules.
const TICK: Duration = Duration::from_secs(5);
/// How many times a job that fails (not a task: the job itself) is run before it becomes a
/// dead letter.
pub const JOB_ATTEMPTS: u32 = 3;
/// Delay before a failed job's second attempt; the third waits four times longer.
const JOB_RETRY_BASE: Duration = Duration::from_secs(1);
/// The most dead letters kept in memory; older ones are dropped.
const MAX_DEAD_LETTERS: usize = 1000;

/// A queued job and how often it ran already.
#[derive(Debug)]
struct Queued {
    job: Job,
    attempts: u32,
    first_attempt: u64,
}

/// The sending half of the in-process queue.
#[derive(Debug, Clone)]
pub struct LocalQueue {
    sender: mpsc::UnboundedSender<Queued>,
}

/// The receiving half, handed to [`run_workers`].
#[derive(Debug)]
pub struct LocalJobs(mpsc::UnboundedReceiver<Queued>);

impl LocalQueue {
    pub fn new() -> (Self, LocalJobs) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (Self { sender }, LocalJobs(receiver))
    }

    fn send(&self, job: Job) -> Result<()> {
        self.requeue(Queued {
            job,
            attempts: 0,
            first_attempt: unix_now(),
        })
    }

    fn requeue(&self, queued: Queued) -> Result<()> {
        self.sender
            .send(queued)
            .map_err(|_| RegistryError::unavailable("the replication queue has stopped"))
    }
}

/// Jobs that failed every attempt, kept in memory (the last [`MAX_DEAD_LETTERS`]).
#[derive(Debug, Default)]
pub struct LocalDeadLetters {
    letters: Mutex<VecDeque<DeadLetter>>,
    next_id: Mutex<u64>,
}

impl LocalDeadLetters {
    fn add(&self, queued: &Queued, error: String) {
        let id = {
            let mut next = self.next_id.lock().unwrap_or_else(PoisonError::into_inner);
            *next += 1;
            *next
        };
        let mut letters = self.letters.lock().unwrap_or_else(PoisonError::into_inner);
        if letters.len() == MAX_DEAD_LETTERS {
            letters.pop_front();
        }
        letters.push_back(DeadLetter {
            id: id.to_string(),
            body: serde_json::to_string(&queued.job).unwrap_or_default(),
            attempts: queued.attempts,
            error: Some(error),
            first_attempt: Some(queued.first_attempt),
        });
    }
}

#[async_trait]
impl DeadLetters for LocalDeadLetters {
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let letters = self.letters.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(letters.iter().take(limit).cloned().collect())
    }
}

#[async_trait]
impl Dispatch for LocalQueue {
    async fn dispatch(&self, job: Job, delay: Duration) -> Result<()> {
        if delay.is_zero() {
            return self.send(job);
        }
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.send(job).ok();
        });
        Ok(())
    }
}

impl EventSink for LocalQueue {
    fn publish(&self, event: &berth_core::Event) {
        let Some(event) = Event::of(event) else {
            return;
        };
        if self.send(Job::Event(event)).is_err() {
            tracing::warn!("replication is not running: an event was not replicated");
        }
    }
}

/// Works the queue, `concurrency` jobs at a time, until every sender is gone. A job that
/// fails is run again (after 1 s, then 4 s); after [`JOB_ATTEMPTS`] it is a dead letter.
pub async fn run_workers(
    replicator: Arc<Replicator>,
    queue: LocalQueue,
    mut jobs: LocalJobs,
    dead_letters: Arc<LocalDeadLetters>,
    concurrency: usize,
) {
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    while let Some(mut queued) = jobs.0.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let replicator = replicator.clone();
        let queue = queue.clone();
        let dead_letters = dead_letters.clone();
        tokio::spawn(async move {
            queued.attempts += 1;
            let result = replicator.handle(queued.job.clone()).await;
            drop(slot);
            let Err(error) = result else {
                return;
            };
            if queued.attempts >= JOB_ATTEMPTS {
                tracing::error!(job = ?queued.job, %error, "replication job failed for good: dead letter");
                dead_letters.add(&queued, error.to_string());
                return;
            }
            let delay = JOB_RETRY_BASE * 4u32.pow(queued.attempts - 1);
            tracing::warn!(job = ?queued.job, %error, "replication job failed; again in {delay:?}");
            tokio::time::sleep(delay).await;
            queue.requeue(queued).ok();
        });
    }
}

/// Starts scheduled policies when due, until the process ends.
pub async fn run_scheduler(replicator: Arc<Replicator>) {
    let mut after = i64::try_from(unix_now()).unwrap_or(0);
    let mut ticks = tokio::time::interval(TICK);
    loop {
        ticks.tick().await;
        let now = i64::try_from(unix_now()).unwrap_or(0);
        if now <= after {
            continue;
        }
        match replicator.tick(after, now).await {
            Ok(started) => {
                for execution in started {
                    tracing::info!(
                        execution = execution.id,
                        policy = execution.policy_id,
                        "scheduled replication started"
                    );
                }
                after = now;
            }
            Err(error) => tracing::warn!(%error, "replication schedules could not be checked"),
        }
    }
}
