//! The audit log's subscriber: each event that records an [`AuditEntry`] is handed to a
//! background task, which writes entries in batches. Publishing never waits for the store,
//! so a slow or failing store never slows a push or a pull.

use std::sync::Arc;
use std::time::Duration;

use berth_core::audit::{AuditEntry, AuditStore};
use berth_core::{Event, EventSink};
use tokio::sync::mpsc;

/// The most entries one write records.
const BATCH: usize = 100;
/// How often a batch that cannot be written is tried, with a growing pause between tries.
const ATTEMPTS: u32 = 5;

/// Records events in an [`AuditStore`].
#[derive(Debug, Clone)]
pub struct AuditLog {
    entries: mpsc::UnboundedSender<AuditEntry>,
}

impl AuditLog {
    /// Starts the writer on the current runtime; entries are kept for `retention`.
    pub fn start(store: Arc<dyn AuditStore>, retention: Duration) -> Self {
        let (entries, received) = mpsc::unbounded_channel();
        let retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
        tokio::spawn(write_batches(store, received, retention_ms));
        Self { entries }
    }
}

impl EventSink for AuditLog {
    fn publish(&self, event: &Event) {
        if let Some(entry) = AuditEntry::of(event)
            && self.entries.send(entry).is_err()
        {
            tracing::warn!("the audit log's writer has stopped: an entry was not recorded");
        }
    }
}

async fn write_batches(
    store: Arc<dyn AuditStore>,
    mut received: mpsc::UnboundedReceiver<AuditEntry>,
    retention_ms: u64,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while received.recv_many(&mut batch, BATCH).await > 0 {
        let mut pause = Duration::from_millis(200);
        for attempt in 1..=ATTEMPTS {
            match store.record(&batch, retention_ms).await {
                Ok(()) => break,
                Err(error) if attempt == ATTEMPTS => {
                    tracing::error!(
                        entries = batch.len(),
                        error = %error,
                        "audit entries could not be recorded"
                    );
                }
                Err(error) => {
                    tracing::warn!(attempt, error = %error, "recording audit entries failed; trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
        batch.clear();
    }
}
