//! The [`StatisticsStore`] port over the table.
//!
//! | item             | `PK`                 | `SK`                 | other attributes                          |
//! |------------------|----------------------|----------------------|-------------------------------------------|
//! | repository usage | `STATS#REPOSITORIES` | `<repository>`       | `pulls`, `last_pull`, `pushed` (Unix ms)  |
//! | artifact usage   | `REPO#<repository>`  | `STATS#<digest>`     | the same                                  |
//! | daily pulls      | `STATS#DAILY`        | `<day>` (zero-padded days since the epoch) | `pulls`, `expires_at` |
//! | count claim      | `COUNTED#<id>`       | `META`               | `expires_at`                              |
//!
//! Each count is one transaction: its claim (which fails if the count was made before, so a
//! redelivered event is counted once) and the counters it adds to. Repository counters share
//! one partition, so that the most pulled are one query. Claims expire after a week and daily
//! counts after twice the window, by time to live.

use std::cmp::Reverse;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
use berth_core::error::{RegistryError, Result};
use berth_core::statistics::{
    Count, DAILY_PULL_DAYS, DailyPulls, StatisticsStore, Usage, daily_window,
};
use berth_core::{Digest, RepositoryName};

use crate::DynamoMetadataStore;
use crate::schema::{META, SORT_KEY, TTL_ATTRIBUTE, repository_pk};
use crate::toolkit::{Item, Outcome, Query, key, n, names, number_attr, string_attr, values};

const REPOSITORIES_PARTITION: &str = "STATS#REPOSITORIES";
const DAILY_PARTITION: &str = "STATS#DAILY";
const CLAIM_SECONDS: u64 = 7 * 86_400;

fn build_error(error: impl std::fmt::Display) -> RegistryError {
    RegistryError::internal(format!("a statistics write: {error}"))
}

fn day_sk(day: u64) -> String {
    format!("{day:08}")
}

fn usage_of(item: Option<&Item>) -> Result<Usage> {
    let Some(item) = item else {
        return Ok(Usage::default());
    };
    let time = |name| -> Result<Option<u64>> {
        Ok(match item.get(name) {
            Some(_) => Some(number_attr(item, name)?),
            None => None,
        })
    };
    Ok(Usage {
        pull_count: time("pulls")?.unwrap_or(0),
        last_pull_ms: time("last_pull")?,
        push_ms: time("pushed")?,
    })
}

impl DynamoMetadataStore {
    /// Adds `count` to the usage item `key`: one more pull and its time, or the push time.
    fn usage_update(&self, key: Item, count: &Count) -> Result<TransactWriteItem> {
        let (expression, time_name) = if count.pull {
            ("ADD #pulls :one SET #time = :at", "last_pull")
        } else {
            ("SET #time = :at", "pushed")
        };
        let mut used_names = vec![("#time", time_name)];
        let mut used_values = vec![(":at", n(count.at_ms))];
        if count.pull {
            used_names.push(("#pulls", "pulls"));
            used_values.push((":one", n(1)));
        }
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression(expression)
            .set_expression_attribute_names(Some(names(&used_names)))
            .set_expression_attribute_values(Some(values(used_values)))
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    fn count_items(&self, count: &Count, now_s: u64) -> Result<Vec<TransactWriteItem>> {
        let mut claim = key(format!("COUNTED#{}", count.id), META);
        claim.insert(TTL_ATTRIBUTE.to_owned(), n(now_s + CLAIM_SECONDS));
        let claim = Put::builder()
            .table_name(&self.table)
            .set_item(Some(claim))
            .condition_expression("attribute_not_exists(#sk)")
            .set_expression_attribute_names(Some(names(&[("#sk", SORT_KEY)])))
            .build()
            .map_err(build_error)?;
        let repository = count.repository.as_str();
        let mut items = vec![
            TransactWriteItem::builder().put(claim).build(),
            self.usage_update(key(REPOSITORIES_PARTITION, repository), count)?,
            self.usage_update(
                key(repository_pk(repository), format!("STATS#{}", count.digest)),
                count,
            )?,
        ];
        if count.pull {
            let expires = (count.day() + 2 * DAILY_PULL_DAYS + 1) * 86_400;
            let update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(key(DAILY_PARTITION, day_sk(count.day()))))
                .update_expression("ADD #pulls :one SET #expires = :expires")
                .set_expression_attribute_names(Some(names(&[
                    ("#pulls", "pulls"),
                    ("#expires", TTL_ATTRIBUTE),
                ])))
                .set_expression_attribute_values(Some(values(vec![
                    (":one", n(1)),
                    (":expires", n(expires)),
                ])))
                .build()
                .map_err(build_error)?;
            items.push(TransactWriteItem::builder().update(update).build());
        }
        Ok(items)
    }
}

#[async_trait]
impl StatisticsStore for DynamoMetadataStore {
    async fn record(&self, counts: &[Count]) -> Result<()> {
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        for count in counts {
            // A failed condition is a claim made before: a redelivery, counted already.
            let (Outcome::Committed | Outcome::ConditionFailed) =
                self.transact(self.count_items(count, now_s)?).await?;
        }
        Ok(())
    }

    async fn repository_usage(&self, repository: &RepositoryName) -> Result<Usage> {
        let item = self
            .get(key(REPOSITORIES_PARTITION, repository.as_str()), None)
            .await?;
        usage_of(item.as_ref())
    }

    async fn artifact_usage(&self, repository: &RepositoryName, digest: &Digest) -> Result<Usage> {
        let item = self
            .get(
                key(
                    repository_pk(repository.as_str()),
                    format!("STATS#{digest}"),
                ),
                None,
            )
            .await?;
        usage_of(item.as_ref())
    }

    async fn most_pulled(&self, limit: usize) -> Result<Vec<(String, u64)>> {
        let mut all = Vec::new();
        for item in self
            .query_all(&Query::partition(REPOSITORIES_PARTITION))
            .await?
        {
            let pulls = usage_of(Some(&item))?.pull_count;
            if pulls > 0 {
                all.push((string_attr(&item, SORT_KEY)?.to_owned(), pulls));
            }
        }
        all.sort_by_key(|(name, pulls)| (Reverse(*pulls), name.clone()));
        all.truncate(limit);
        Ok(all)
    }

    async fn daily_pulls(&self, today: u64) -> Result<Vec<DailyPulls>> {
        let window = daily_window(today);
        let items = self
            .query_all(&Query::between(
                DAILY_PARTITION,
                &day_sk(*window.start()),
                &day_sk(*window.end()),
            ))
            .await?;
        let mut pulls = std::collections::HashMap::new();
        for item in items {
            let day = string_attr(&item, SORT_KEY)?
                .parse::<u64>()
                .map_err(|e| RegistryError::internal(format!("a daily pulls item: {e}")))?;
            pulls.insert(day, number_attr(&item, "pulls")?);
        }
        Ok(window
            .map(|day| DailyPulls {
                day,
                pulls: pulls.get(&day).copied().unwrap_or(0),
            })
            .collect())
    }
}
