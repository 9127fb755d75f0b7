//! The [`AuditStore`] port over the metadata database.
//!
//! | table          | key            | value                                  |
//! |----------------|----------------|----------------------------------------|
//! | `audit`        | (at_ms, id)    | (the [`AuditEntry`] as JSON, expires at) |
//!
//! Entries are kept in time order, so a query scans the range its times allow, newest first
//! or oldest first; an entry recorded again has the same key, so it is kept once. Each write
//! also removes a few entries whose retention has passed, oldest first, as DynamoDB's time to
//! live would.
//!
//! Entries recorded with their counts ([`AuditStore::record_counted`]) are written in one
//! transaction with the counters: a count is added only when its entry's row is new, so the
//! audit row is what makes counting idempotent, and no count id is stored beside it.

use std::any::Any;
use std::collections::HashSet;

use async_trait::async_trait;
use berth_core::audit::{AuditEntry, AuditPage, AuditQuery, AuditStore, MAX_AUDIT_PAGE};
use berth_core::error::{RegistryError, Result};
use berth_core::statistics::{Count, StatisticsStore};
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::metadata::{RedbMetadataStore, now_ms};
use crate::statistics;

const AUDIT: TableDefinition<(u64, u64), (&str, u64)> = TableDefinition::new("audit");

/// Expired entries one write removes at most.
const EXPIRED_PER_WRITE: usize = 256;

/// Creates the audit tables (in a database of any earlier release too).
pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(AUDIT)?;
    Ok(())
}

/// An entry's key and its row: its JSON.
type Row = ((u64, u64), String);

fn rows(entries: &[AuditEntry]) -> Result<Vec<Row>> {
    entries
        .iter()
        .map(|entry| {
            serde_json::to_string(entry)
                .map(|json| ((entry.at_ms, entry.id), json))
                .map_err(|e| RegistryError::internal(format!("encoding an audit entry: {e}")))
        })
        .collect()
}

/// Removes a few expired entries and inserts `rows`, each kept until `retention_ms` after its
/// time; calls `fresh` with the key of each row that was not there before.
fn insert_rows(
    txn: &WriteTransaction,
    rows: &[Row],
    retention_ms: u64,
    now: u64,
    mut fresh: impl FnMut((u64, u64)),
) -> Result<(), redb::Error> {
    let mut audit = txn.open_table(AUDIT)?;
    // The oldest entries first: the first one still kept ends the look.
    let mut expired: Vec<(u64, u64)> = Vec::new();
    for row in audit.iter()?.take(EXPIRED_PER_WRITE) {
        let (key, value) = row?;
        if value.value().1 > now {
            break;
        }
        expired.push(key.value());
    }
    for key in expired {
        audit.remove(key)?;
    }
    for (key, json) in rows {
        let expires_at = key.0.saturating_add(retention_ms);
        if audit.insert(*key, (json.as_str(), expires_at))?.is_none() {
            fresh(*key);
        }
    }
    Ok(())
}

#[async_trait]
impl AuditStore for RedbMetadataStore {
    async fn record(&self, entries: &[AuditEntry], retention_ms: u64) -> Result<()> {
        let rows = rows(entries)?;
        let now = now_ms();
        self.write(move |txn| insert_rows(txn, &rows, retention_ms, now, |_| {}))
            .await
    }

    /// With the counters in this same database, one transaction: the counts of entries new to
    /// the log are added, and no count id is remembered (the entry's row is the claim).
    async fn record_counted(
        &self,
        entries: &[AuditEntry],
        retention_ms: u64,
        counts: &[Count],
        statistics: &dyn StatisticsStore,
    ) -> Result<()> {
        let same_database = (statistics as &dyn Any)
            .downcast_ref::<Self>()
            .is_some_and(|other| self.shares_database(other));
        if !same_database {
            AuditStore::record(self, entries, retention_ms).await?;
            return statistics.record(counts).await;
        }
        let rows = rows(entries)?;
        let counts = counts.to_vec();
        let now = now_ms();
        self.write(move |txn| {
            let mut new_entries = HashSet::with_capacity(rows.len());
            insert_rows(txn, &rows, retention_ms, now, |key| {
                new_entries.insert(key);
            })?;
            // Each new entry counts once, even if the batch holds its event twice.
            let fresh: Vec<&Count> = counts
                .iter()
                .filter(|count| new_entries.remove(&(count.at_ms, count.id)))
                .collect();
            statistics::forget_old_claims(txn, now)?;
            statistics::add_up(txn, &fresh, now)
        })
        .await
    }

    async fn query(&self, query: &AuditQuery, now_ms: u64) -> Result<AuditPage> {
        let size = query.page_size.clamp(1, MAX_AUDIT_PAGE);
        let skip = query.page.saturating_sub(1).saturating_mul(size);
        let from = (query.from_ms.unwrap_or(0), 0);
        let to = (query.to_ms.unwrap_or(u64::MAX), u64::MAX);
        let rows = self.read(|txn| {
            let audit = txn.open_table(AUDIT)?;
            let range = audit.range(from..=to)?;
            let mut page = Vec::new();
            let mut total = 0u64;
            let mut visit = |row: Result<_, redb::StorageError>| -> Result<(), redb::Error> {
                let (_, value): (_, redb::AccessGuard<'_, (&str, u64)>) = row?;
                let (json, expires_at) = value.value();
                if expires_at <= now_ms {
                    return Ok(());
                }
                let Ok(entry) = serde_json::from_str::<AuditEntry>(json) else {
                    return Ok(());
                };
                if !query.matches(&entry) {
                    return Ok(());
                }
                if usize::try_from(total).is_ok_and(|seen| seen >= skip) && page.len() < size {
                    page.push(entry);
                }
                total += 1;
                Ok(())
            };
            if query.oldest_first {
                for row in range {
                    visit(row)?;
                }
            } else {
                for row in range.rev() {
                    visit(row)?;
                }
            }
            Ok(AuditPage {
                entries: page,
                total,
            })
        })?;
        Ok(rows)
    }
}
