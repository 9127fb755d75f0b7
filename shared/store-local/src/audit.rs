//! The [`AuditStore`] port over the metadata database.
//!
//! | table           | key         | value                                                            |
//! |-----------------|-------------|------------------------------------------------------------------|
//! | `audit_entries` | (at_ms, id) | (expires at, username, resource, resource type, operation, project) |
//!
//! Entries are kept in time order, so a query scans the range its times allow, newest first
//! or oldest first; an entry recorded again has the same key, so it is kept once. Each write
//! also removes a few entries whose retention has passed, oldest first, as DynamoDB's time to
//! live would. A row holds the entry's fields as a redb tuple (the key holds its time and id):
//! about half the bytes of the entry as JSON, and nothing to encode or parse.
//!
//! Entries recorded with their counts ([`AuditStore::record_counted`]) are written in one
//! transaction with the counters: a count is added only when its entry's row is new, so the
//! audit row is what makes counting idempotent, and no count id is stored beside it.
//!
//! Earlier releases kept each entry as JSON in the table `audit`; opening such a database
//! moves its rows into `audit_entries` and drops `audit`, in the transaction that creates the
//! tables.

use std::any::Any;
use std::collections::HashSet;

use async_trait::async_trait;
use berth_core::audit::{AuditEntry, AuditPage, AuditQuery, AuditStore, MAX_AUDIT_PAGE};
use berth_core::error::Result;
use berth_core::statistics::{Count, StatisticsStore};
use redb::{ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use crate::metadata::{RedbMetadataStore, now_ms};
use crate::statistics;

/// Expires at, username, resource, resource type, operation, project.
type AuditRow<'a> = (u64, &'a str, &'a str, &'a str, &'a str, Option<&'a str>);
const AUDIT: TableDefinition<(u64, u64), AuditRow<'static>> = TableDefinition::new("audit_entries");
/// Earlier releases' table: each entry as JSON, and when it expires.
const JSON_AUDIT: TableDefinition<(u64, u64), (&str, u64)> = TableDefinition::new("audit");

/// Expired entries one write removes at most.
const EXPIRED_PER_WRITE: usize = 256;

/// Creates the audit tables (in a database of any earlier release too), and moves the entries
/// an earlier release kept as JSON into them.
pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(AUDIT)?;
    let has_json_rows = txn
        .list_tables()?
        .any(|table| table.name() == JSON_AUDIT.name());
    if has_json_rows {
        {
            let json_rows = txn.open_table(JSON_AUDIT)?;
            let mut audit = txn.open_table(AUDIT)?;
            for row in json_rows.iter()? {
                let (key, value) = row?;
                let (json, expires_at) = value.value();
                // A row that does not parse was never answered either.
                if let Ok(entry) = serde_json::from_str::<AuditEntry>(json) {
                    audit.insert(key.value(), row_of(&entry, expires_at))?;
                }
            }
        }
        txn.delete_table(JSON_AUDIT)?;
    }
    Ok(())
}

fn row_of(entry: &AuditEntry, expires_at: u64) -> AuditRow<'_> {
    (
        expires_at,
        &entry.username,
        &entry.resource,
        &entry.resource_type,
        &entry.operation,
        entry.project.as_deref(),
    )
}

fn entry_of((at_ms, id): (u64, u64), row: AuditRow<'_>) -> AuditEntry {
    let (_, username, resource, resource_type, operation, project) = row;
    AuditEntry {
        id,
        at_ms,
        username: username.to_owned(),
        resource: resource.to_owned(),
        resource_type: resource_type.to_owned(),
        operation: operation.to_owned(),
        project: project.map(str::to_owned),
    }
}

/// Removes a few expired entries and inserts `entries`, each kept until `retention_ms` after
/// its time; calls `fresh` with the key of each entry that was not there before.
fn insert_entries(
    txn: &WriteTransaction,
    entries: &[AuditEntry],
    retention_ms: u64,
    now: u64,
    mut fresh: impl FnMut((u64, u64)),
) -> Result<(), redb::Error> {
    let mut audit = txn.open_table(AUDIT)?;
    // The oldest entries first: the first one still kept ends the look.
    let mut expired: Vec<(u64, u64)> = Vec::new();
    for row in audit.iter()?.take(EXPIRED_PER_WRITE) {
        let (key, value) = row?;
        if value.value().0 > now {
            break;
        }
        expired.push(key.value());
    }
    for key in expired {
        audit.remove(key)?;
    }
    for entry in entries {
        let key = (entry.at_ms, entry.id);
        let expires_at = entry.at_ms.saturating_add(retention_ms);
        if audit.insert(key, row_of(entry, expires_at))?.is_none() {
            fresh(key);
        }
    }
    Ok(())
}

#[async_trait]
impl AuditStore for RedbMetadataStore {
    async fn record(&self, entries: &[AuditEntry], retention_ms: u64) -> Result<()> {
        let entries = entries.to_vec();
        let now = now_ms();
        self.write(move |txn| insert_entries(txn, &entries, retention_ms, now, |_| {}))
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
        let entries = entries.to_vec();
        let counts = counts.to_vec();
        let now = now_ms();
        self.write(move |txn| {
            let mut new_entries = HashSet::with_capacity(entries.len());
            insert_entries(txn, &entries, retention_ms, now, |key| {
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
                let (key, value): (
                    redb::AccessGuard<'_, (u64, u64)>,
                    redb::AccessGuard<'_, AuditRow<'static>>,
                ) = row?;
                let row = value.value();
                if row.0 <= now_ms {
                    return Ok(());
                }
                let entry = entry_of(key.value(), row);
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

#[cfg(test)]
mod tests {
    use redb::Database;

    use super::*;

    #[tokio::test]
    async fn entries_an_earlier_release_kept_as_json_are_moved_on_open() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("metadata.redb");
        let now = now_ms();
        let entry = AuditEntry {
            id: 7,
            at_ms: now - 1000,
            username: "alice".to_owned(),
            resource: "team/app:v1".to_owned(),
            resource_type: "artifact".to_owned(),
            operation: "create".to_owned(),
            project: Some("team".to_owned()),
        };
        let unnamed = AuditEntry {
            id: 8,
            project: None,
            ..entry.clone()
        };
        {
            let db = Database::create(&path).expect("creating");
            let txn = db.begin_write().expect("a write");
            {
                let mut table = txn.open_table(JSON_AUDIT).expect("the JSON table");
                for entry in [&entry, &unnamed] {
                    let json = serde_json::to_string(entry).expect("JSON");
                    table
                        .insert((entry.at_ms, entry.id), (json.as_str(), now + 60_000))
                        .expect("a row");
                }
                table
                    .insert((now, 9), ("not JSON", now + 60_000))
                    .expect("a row");
            }
            txn.commit().expect("committed");
        }

        let store = RedbMetadataStore::open(&path).expect("opening");
        let page = store
            .query(&AuditQuery::default(), now)
            .await
            .expect("answered");
        assert_eq!(page.entries, [unnamed, entry], "newest first");
        let gone = store
            .read(|txn| Ok(txn.list_tables()?.all(|t| t.name() != JSON_AUDIT.name())))
            .expect("listed");
        assert!(gone, "the JSON table is dropped");
        drop(store);
        let again = RedbMetadataStore::open(&path).expect("opening again");
        let page = again
            .query(&AuditQuery::default(), now)
            .await
            .expect("answered");
        assert_eq!(page.total, 2, "moved once");
    }
}
