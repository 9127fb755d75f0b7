//! The [`AuditStore`] port over the table.
//!
//! | item          | `PK`                 | `SK`                       | other attributes                   |
//! |---------------|----------------------|----------------------------|------------------------------------|
//! | audit entry   | `AUDIT#<yyyy-mm-dd>` | `<at_ms>#<id>` (zero-padded) | `entry` (JSON), `expires_at`     |
//! | audit day     | `AUDIT#DAYS`         | `<yyyy-mm-dd>`             | `expires_at` (its latest entry's)  |
//!
//! One partition per UTC day spreads the writes; the day items say which partitions hold
//! entries, so a query reads only those. An entry's key is its time and id: recording the
//! same entry again writes the same item. Time to live removes entries past their retention
//! (within a couple of days), and queries never answer one that is.
//!
//! A query reads every entry of the days its time range allows and filters them here, so its
//! cost grows with the entries kept; a registry with heavy traffic should ask with `op_time`.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use berth_core::audit::{AuditEntry, AuditPage, AuditQuery, AuditStore, MAX_AUDIT_PAGE};
use berth_core::error::{RegistryError, Result};

use crate::DynamoMetadataStore;
use crate::schema::TTL_ATTRIBUTE;
use crate::toolkit::{Query, key, n, number_attr, s, string_attr};

const DAYS_PARTITION: &str = "AUDIT#DAYS";
const DAY_MS: u64 = 86_400_000;

/// The UTC day of `at_ms`, as `yyyy-mm-dd`.
fn day(at_ms: u64) -> String {
    // Days since the epoch to a civil date (Howard Hinnant's algorithm).
    let days = i64::try_from(at_ms / DAY_MS).unwrap_or(i64::MAX) + 719_468;
    let era = days.div_euclid(146_097);
    let of_era = days.rem_euclid(146_097);
    let year_of_era = (of_era - of_era / 1460 + of_era / 36_524 - of_era / 146_096) / 365;
    let of_year = of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * of_year + 2) / 153;
    let day = of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn entry_sk(entry: &AuditEntry) -> String {
    format!("{:013}#{:016}", entry.at_ms, entry.id)
}

#[async_trait]
impl AuditStore for DynamoMetadataStore {
    async fn record(&self, entries: &[AuditEntry], retention_ms: u64) -> Result<()> {
        let mut days: BTreeMap<String, u64> = BTreeMap::new();
        let mut requests = Vec::with_capacity(entries.len() + 1);
        let mut keys = HashSet::with_capacity(entries.len());
        for entry in entries {
            // A batch may hold an event twice, and BatchWriteItem refuses a key twice.
            if !keys.insert((entry.at_ms, entry.id)) {
                continue;
            }
            let json = serde_json::to_string(entry)
                .map_err(|e| RegistryError::internal(format!("encoding an audit entry: {e}")))?;
            let expires_at = entry.at_ms.saturating_add(retention_ms) / 1000;
            let day = day(entry.at_ms);
            let mut item = key(format!("AUDIT#{day}"), entry_sk(entry));
            item.insert("entry".to_owned(), s(json));
            item.insert(TTL_ATTRIBUTE.to_owned(), n(expires_at));
            requests.push(item);
            let latest = days.entry(day).or_default();
            *latest = (*latest).max(expires_at);
        }
        for (day, expires_at) in days {
            let mut item = key(DAYS_PARTITION, day);
            item.insert(TTL_ATTRIBUTE.to_owned(), n(expires_at));
            requests.push(item);
        }
        let requests = requests
            .into_iter()
            .map(|item| {
                let put = PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map_err(|e| RegistryError::internal(format!("an audit write: {e}")))?;
                Ok(WriteRequest::builder().put_request(put).build())
            })
            .collect::<Result<Vec<_>>>()?;
        self.batch_write(requests).await
    }

    async fn query(&self, query: &AuditQuery, now_ms: u64) -> Result<AuditPage> {
        let now_s = now_ms / 1000;
        let from = query.from_ms.map(day);
        let to = query.to_ms.map(day);
        let days = self.query_all(&Query::partition(DAYS_PARTITION)).await?;
        let mut matching = Vec::new();
        for item in days {
            if number_attr(&item, TTL_ATTRIBUTE)? <= now_s {
                continue;
            }
            let day = string_attr(&item, "SK")?;
            if from.as_deref().is_some_and(|from| day < from)
                || to.as_deref().is_some_and(|to| day > to)
            {
                continue;
            }
            for item in self
                .query_all(&Query::partition(&format!("AUDIT#{day}")))
                .await?
            {
                if number_attr(&item, TTL_ATTRIBUTE)? <= now_s {
                    continue;
                }
                let entry: AuditEntry = serde_json::from_str(string_attr(&item, "entry")?)
                    .map_err(|e| RegistryError::internal(format!("an audit entry: {e}")))?;
                if query.matches(&entry) {
                    matching.push(entry);
                }
            }
        }
        matching.sort_by_key(|entry| (entry.at_ms, entry.id));
        if !query.oldest_first {
            matching.reverse();
        }
        let size = query.page_size.clamp(1, MAX_AUDIT_PAGE);
        let skip = query.page.saturating_sub(1).saturating_mul(size);
        let total = matching.len() as u64;
        Ok(AuditPage {
            entries: matching.into_iter().skip(skip).take(size).collect(),
            total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_calendar_days() {
        assert_eq!(day(0), "1970-01-01");
        assert_eq!(day(951_782_400_000), "2000-02-29");
        assert_eq!(day(1_767_225_599_999), "2025-12-31");
        assert_eq!(day(1_767_225_600_000), "2026-01-01");
        assert_eq!(day(4_107_542_400_000), "2100-03-01");
    }
}
