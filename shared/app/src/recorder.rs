//! What events leave behind: audit entries and pull and push counts. [`record`] writes those
//! of a batch of events (the events function calls it for the lines CloudWatch Logs delivers);
//! [`EventRecorder`] is the subscriber that does it from a background task, in batches, so a
//! slow or failing store never slows a push or a pull. Its queue is bounded: events that come
//! while it is full are dropped, counted and logged, rather than held in memory without limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use berth_core::audit::{AuditEntry, AuditStore};
use berth_core::statistics::{Count, StatisticsStore};
use berth_core::{Event, EventSink, Result};
use tokio::sync::mpsc;

/// The most events one write records: when the writer falls behind, each write takes more,
/// so the cost of a commit is shared by many events.
const BATCH: usize = 2_000;
/// How often a batch that cannot be written is tried, with a growing pause between tries.
const ATTEMPTS: u32 = 5;
/// Events waiting to be recorded, at most: a few seconds of a busy registry's pulls (each
/// waiting event holds a few hundred bytes).
const QUEUE: usize = 50_000;
/// The least time from one write to the next, unless the writer is behind (a full batch
/// waits). An event that comes after a quiet spell is written at once; under load, the events
/// of this long make one batch, so a busy registry commits a few times a second instead of
/// once per handful of events (a commit, with its sync to disk, costs far more than the rows
/// it writes).
const GATHER: Duration = Duration::from_millis(50);

/// Where events are recorded.
#[derive(Clone, Default)]
pub struct Records {
    /// The audit log, and how long it keeps an entry.
    pub audit: Option<(Arc<dyn AuditStore>, Duration)>,
    pub statistics: Option<Arc<dyn StatisticsStore>>,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field(
                "audit",
                &self.audit.as_ref().map(|(_, retention)| retention),
            )
            .field("statistics", &self.statistics.is_some())
            .finish()
    }
}

impl Records {
    pub fn is_empty(&self) -> bool {
        self.audit.is_none() && self.statistics.is_none()
    }
}

/// Records the audit entries and counts of `events`; recording them again records nothing
/// more. Returns how many entries and counts there were.
pub async fn record(records: &Records, events: &[Event]) -> Result<(usize, usize)> {
    let mut entries = Vec::new();
    let mut counts = Vec::new();
    for event in events {
        let Some(entry) = AuditEntry::of(event) else {
            continue;
        };
        if records.statistics.is_some()
            && let Some(count) = Count::with_id(event, entry.id)
        {
            counts.push(count);
        }
        entries.push(entry);
    }
    let retention_ms =
        |retention: &Duration| u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
    match (&records.audit, &records.statistics) {
        // Together, so that a store keeping both may write them at once.
        (Some((audit, retention)), Some(statistics)) => {
            audit
                .record_counted(&entries, retention_ms(retention), &counts, &**statistics)
                .await?;
        }
        (Some((audit, retention)), None) => audit.record(&entries, retention_ms(retention)).await?,
        (None, Some(statistics)) => statistics.record(&counts).await?,
        (None, None) => {}
    }
    let audited = if records.audit.is_some() {
        entries.len()
    } else {
        0
    };
    Ok((audited, counts.len()))
}

/// Records the events it receives, from a background task.
#[derive(Debug, Clone)]
pub struct EventRecorder {
    events: mpsc::Sender<Event>,
    dropped: Arc<AtomicU64>,
}

impl EventRecorder {
    /// Starts the writer on the current runtime.
    pub fn start(records: Records) -> Self {
        Self::with_queue(records, QUEUE)
    }

    fn with_queue(records: Records, queue: usize) -> Self {
        let (events, received) = mpsc::channel(queue);
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(write_batches(records, received, Arc::clone(&dropped)));
        Self { events, dropped }
    }

    /// How many events were not recorded because the queue was full, since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl EventSink for EventRecorder {
    fn publish(&self, event: &Event) {
        if !AuditEntry::records(&event.kind) {
            return;
        }
        match self.events.try_send(event.clone()) {
            Ok(()) => {}
            // Counted here, logged by the writer once it has written what it holds.
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::warn!("the event recorder has stopped: an event was not recorded");
            }
        }
    }
}

async fn write_batches(
    records: Records,
    mut received: mpsc::Receiver<Event>,
    dropped: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut reported = 0;
    while received.recv_many(&mut batch, BATCH).await > 0 {
        let started = tokio::time::Instant::now();
        let behind = batch.len() == BATCH;
        let mut pause = Duration::from_millis(200);
        for attempt in 1..=ATTEMPTS {
            match record(&records, &batch).await {
                Ok(_) => break,
                Err(error) if attempt == ATTEMPTS => {
                    tracing::error!(
                        events = batch.len(),
                        error = %error,
                        "events could not be recorded in the audit log and statistics"
                    );
                }
                Err(error) => {
                    tracing::warn!(attempt, error = %error, "recording events failed; trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
        batch.clear();
        let total = dropped.load(Ordering::Relaxed);
        if total > reported {
            tracing::error!(
                dropped = total - reported,
                total,
                "the event recorder fell behind: events were dropped, not recorded in the audit \
                 log and statistics"
            );
            reported = total;
        }
        if !behind {
            tokio::time::sleep_until(started + GATHER).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use berth_core::audit::{AuditPage, AuditQuery};
    use berth_core::{Actor, Algorithm, Digest, EntryPoint, EventKind, RepositoryName};
    use berth_store_local::RedbMetadataStore;
    use tokio::sync::{Notify, Semaphore};

    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn repository() -> RepositoryName {
        "team/app".parse().expect("a repository name")
    }

    fn pull(i: u64) -> Event {
        Event {
            at_ms: 1_900_000_000_000 + i,
            actor: Actor::User("alice".to_owned()),
            request_id: format!("request-{i}"),
            client: "127.0.0.1".to_owned(),
            entry: EntryPoint::Registry,
            kind: EventKind::ManifestPulled {
                repository: repository(),
                reference: "latest".parse().expect("a tag"),
                digest: Digest::of(Algorithm::Sha256, b"manifest"),
            },
        }
    }

    #[tokio::test]
    async fn published_pulls_are_audited_and_counted() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store =
            Arc::new(RedbMetadataStore::open(dir.path().join("metadata.redb")).expect("opening"));
        let recorder = EventRecorder::start(Records {
            audit: Some((store.clone(), DAY)),
            statistics: Some(store.clone()),
        });
        for i in 0..10 {
            recorder.publish(&pull(i));
        }
        // Published twice (as a redelivery would be): recorded once.
        recorder.publish(&pull(0));
        let mut recorded = 0;
        for _ in 0..200 {
            recorded = store
                .query(&AuditQuery::default(), 1_900_000_000_000)
                .await
                .expect("answered")
                .total;
            if recorded >= 10 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(recorded, 10, "every pull audited once");
        let usage = store.repository_usage(&repository()).await.expect("read");
        assert_eq!(usage.pull_count, 10, "every pull counted once");
        assert_eq!(recorder.dropped(), 0);
    }

    /// An audit store that holds each write until it is let go.
    struct Held {
        writing: Notify,
        gate: Semaphore,
        recorded: Mutex<usize>,
    }

    #[async_trait]
    impl AuditStore for Held {
        async fn record(&self, entries: &[AuditEntry], _retention_ms: u64) -> Result<()> {
            self.writing.notify_one();
            let _let_go = self.gate.acquire().await.expect("the gate is open");
            *self.recorded.lock().expect("not poisoned") += entries.len();
            Ok(())
        }

        async fn query(&self, _query: &AuditQuery, _now_ms: u64) -> Result<AuditPage> {
            Ok(AuditPage {
                entries: Vec::new(),
                total: 0,
            })
        }
    }

    #[tokio::test]
    async fn events_beyond_a_full_queue_are_dropped_and_counted() {
        let held = Arc::new(Held {
            writing: Notify::new(),
            gate: Semaphore::new(0),
            recorded: Mutex::new(0),
        });
        let recorder = EventRecorder::with_queue(
            Records {
                audit: Some((held.clone(), DAY)),
                statistics: None,
            },
            4,
        );
        recorder.publish(&pull(0));
        // The writer holds the first event; four more fill the queue, two find it full.
        held.writing.notified().await;
        for i in 1..=6 {
            recorder.publish(&pull(i));
        }
        assert_eq!(recorder.dropped(), 2);

        held.gate.add_permits(Semaphore::MAX_PERMITS);
        for _ in 0..200 {
            if *held.recorded.lock().expect("not poisoned") >= 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(
            *held.recorded.lock().expect("not poisoned"),
            5,
            "the queued events"
        );
    }
}
