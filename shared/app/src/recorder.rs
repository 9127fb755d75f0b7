//! What events leave behind: audit entries and pull and push counts. [`record`] writes those
//! of a batch of events (the events function calls it for the lines CloudWatch Logs delivers);
//! [`EventRecorder`] is the subscriber that does it from a background task, in batches, so a
//! slow or failing store never slows a push or a pull.

use std::sync::Arc;
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
    events: mpsc::UnboundedSender<Event>,
}

impl EventRecorder {
    /// Starts the writer on the current runtime.
    pub fn start(records: Records) -> Self {
        let (events, received) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(records, received));
        Self { events }
    }
}

impl EventSink for EventRecorder {
    fn publish(&self, event: &Event) {
        if AuditEntry::records(&event.kind) && self.events.send(event.clone()).is_err() {
            tracing::warn!("the event recorder has stopped: an event was not recorded");
        }
    }
}

async fn write_batches(records: Records, mut received: mpsc::UnboundedReceiver<Event>) {
    let mut batch = Vec::with_capacity(BATCH);
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
        if !behind {
            tokio::time::sleep_until(started + GATHER).await;
        }
    }
}
