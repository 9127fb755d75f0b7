//! The [`StatisticsStore`] port over the metadata database.
//!
//! | table              | key                  | value                                    |
//! |--------------------|----------------------|------------------------------------------|
//! | `repository_usage` | repository           | (pulls, last pull ms, push ms; 0: never) |
//! | `artifact_usage`   | (repository, digest) | the same                                 |
//! | `daily_pulls`      | day since the epoch  | pulls                                    |
//! | `counted`          | count id             | when it was counted (ms)                 |
//! | `counted_at`       | (ms, count id)       | `()`                                     |
//!
//! `counted` makes counting idempotent; ids older than [`REMEMBERED_MS`] are forgotten a
//! batch per write (a redelivery comes within hours), as are daily counts past the window.
//! Counts recorded together with their audit entries (`AuditStore::record_counted`, as the
//! event recorder does) need no id of their own: the entry's row, written in the same
//! transaction, says whether the event was recorded before, and only counts of entries new to
//! the audit log are added (see `audit.rs`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use berth_core::error::Result;
use berth_core::statistics::{
    Count, DAILY_PULL_DAYS, DailyPulls, StatisticsStore, Usage, daily_window,
};
use berth_core::{Digest, RepositoryName};
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::metadata::{RedbMetadataStore, now_ms};

type UsageRow = (u64, u64, u64);

const REPOSITORY_USAGE: TableDefinition<&str, UsageRow> = TableDefinition::new("repository_usage");
const ARTIFACT_USAGE: TableDefinition<(&str, &str), UsageRow> =
    TableDefinition::new("artifact_usage");
const DAILY_PULLS: TableDefinition<u64, u64> = TableDefinition::new("daily_pulls");
const COUNTED: TableDefinition<u64, u64> = TableDefinition::new("counted");
const COUNTED_AT: TableDefinition<(u64, u64), ()> = TableDefinition::new("counted_at");

/// How long a count's id is remembered against redelivery.
const REMEMBERED_MS: u64 = 7 * 86_400_000;
/// Forgotten ids one write removes at most.
const FORGOTTEN_PER_WRITE: usize = 256;

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(REPOSITORY_USAGE)?;
    txn.open_table(ARTIFACT_USAGE)?;
    txn.open_table(DAILY_PULLS)?;
    txn.open_table(COUNTED)?;
    txn.open_table(COUNTED_AT)?;
    Ok(())
}

fn counted(row: UsageRow, count: &Count) -> UsageRow {
    let (pulls, last_pull, push) = row;
    if count.pull {
        (pulls + 1, last_pull.max(count.at_ms), push)
    } else {
        (pulls, last_pull, push.max(count.at_ms))
    }
}

/// `row` with the pulls and times of `added` added.
fn merged(row: UsageRow, added: UsageRow) -> UsageRow {
    (row.0 + added.0, row.1.max(added.1), row.2.max(added.2))
}

fn usage((pull_count, last_pull, push): UsageRow) -> Usage {
    Usage {
        pull_count,
        last_pull_ms: (last_pull > 0).then_some(last_pull),
        push_ms: (push > 0).then_some(push),
    }
}

/// Forgets count ids older than [`REMEMBERED_MS`], a batch at a time.
pub(crate) fn forget_old_claims(txn: &WriteTransaction, now: u64) -> Result<(), redb::Error> {
    let mut seen = txn.open_table(COUNTED)?;
    let mut seen_at = txn.open_table(COUNTED_AT)?;
    let forgotten: Vec<(u64, u64)> = seen_at
        .range(..(now.saturating_sub(REMEMBERED_MS), 0))?
        .take(FORGOTTEN_PER_WRITE)
        .filter_map(|row| row.ok().map(|(key, _)| key.value()))
        .collect();
    for (at, id) in forgotten {
        seen_at.remove((at, id))?;
        seen.remove(id)?;
    }
    Ok(())
}

/// Adds `counts`, each known not to be counted before, to the counters: added up per
/// repository, artifact and day first, so that a batch of pulls of one image is one update
/// of each counter. Also forgets daily counts past twice the window.
pub(crate) fn add_up(
    txn: &WriteTransaction,
    counts: &[&Count],
    now: u64,
) -> Result<(), redb::Error> {
    let mut by_repository: BTreeMap<&str, UsageRow> = BTreeMap::new();
    let mut by_artifact: BTreeMap<(&str, &str), UsageRow> = BTreeMap::new();
    let mut by_day: BTreeMap<u64, u64> = BTreeMap::new();
    for count in counts {
        let repository = count.repository.as_str();
        let row = by_repository.entry(repository).or_default();
        *row = counted(*row, count);
        let row = by_artifact
            .entry((repository, count.digest.as_str()))
            .or_default();
        *row = counted(*row, count);
        if count.pull {
            *by_day.entry(count.day()).or_default() += 1;
        }
    }
    let mut repositories = txn.open_table(REPOSITORY_USAGE)?;
    for (repository, added) in by_repository {
        let row = repositories
            .get(repository)?
            .map_or((0, 0, 0), |r| r.value());
        repositories.insert(repository, merged(row, added))?;
    }
    let mut artifacts = txn.open_table(ARTIFACT_USAGE)?;
    for (key, added) in by_artifact {
        let row = artifacts.get(key)?.map_or((0, 0, 0), |r| r.value());
        artifacts.insert(key, merged(row, added))?;
    }
    let mut daily = txn.open_table(DAILY_PULLS)?;
    for (day, pulls) in by_day {
        let before = daily.get(day)?.map_or(0, |r| r.value());
        daily.insert(day, before + pulls)?;
    }
    let stale = (now / 86_400_000).saturating_sub(DAILY_PULL_DAYS * 2);
    let old: Vec<u64> = daily
        .range(..stale)?
        .take(FORGOTTEN_PER_WRITE)
        .filter_map(|row| row.ok().map(|(day, _)| day.value()))
        .collect();
    for day in old {
        daily.remove(day)?;
    }
    Ok(())
}

#[async_trait]
impl StatisticsStore for RedbMetadataStore {
    async fn record(&self, counts: &[Count]) -> Result<()> {
        let counts = counts.to_vec();
        let now = now_ms();
        self.write(move |txn| {
            forget_old_claims(txn, now)?;
            let mut seen = txn.open_table(COUNTED)?;
            let mut seen_at = txn.open_table(COUNTED_AT)?;
            let mut fresh: Vec<&Count> = Vec::with_capacity(counts.len());
            for count in &counts {
                if seen.insert(count.id, now)?.is_none() {
                    seen_at.insert((now, count.id), ())?;
                    fresh.push(count);
                }
            }
            add_up(txn, &fresh, now)
        })
        .await
    }

    async fn repository_usage(&self, repository: &RepositoryName) -> Result<Usage> {
        self.read(|txn| {
            Ok(usage(
                txn.open_table(REPOSITORY_USAGE)?
                    .get(repository.as_str())?
                    .map_or((0, 0, 0), |row| row.value()),
            ))
        })
    }

    async fn artifact_usage(&self, repository: &RepositoryName, digest: &Digest) -> Result<Usage> {
        self.read(|txn| {
            Ok(usage(
                txn.open_table(ARTIFACT_USAGE)?
                    .get((repository.as_str(), digest.as_str()))?
                    .map_or((0, 0, 0), |row| row.value()),
            ))
        })
    }

    async fn most_pulled(&self, limit: usize) -> Result<Vec<(String, u64)>> {
        let mut all = self.read(|txn| {
            let table = txn.open_table(REPOSITORY_USAGE)?;
            let mut all = Vec::new();
            for row in table.iter()? {
                let (name, row) = row?;
                let (pulls, _, _) = row.value();
                if pulls > 0 {
                    all.push((name.value().to_owned(), pulls));
                }
            }
            Ok(all)
        })?;
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(limit);
        Ok(all)
    }

    async fn daily_pulls(&self, today: u64) -> Result<Vec<DailyPulls>> {
        self.read(|txn| {
            let table = txn.open_table(DAILY_PULLS)?;
            daily_window(today)
                .map(|day| {
                    let pulls = table.get(day)?.map_or(0, |row| row.value());
                    Ok(DailyPulls { day, pulls })
                })
                .collect()
        })
    }
}
