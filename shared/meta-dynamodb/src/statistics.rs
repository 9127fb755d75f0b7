//! The [`StatisticsStore`] port over the table.
//!
//! | item             | `PK`                 | `SK`                 | other attributes                          |
//! |------------------|----------------------|----------------------|-------------------------------------------|
//! | repository usage | `STATS#REPOSITORIES` | `<repository>`       | `pulls`, `last_pull`, `pushed` (Unix ms)  |
//! | artifact usage   | `REPO#<repository>`  | `STATS#<digest>`     | the same                                  |
//! | daily pulls      | `STATS#DAILY`        | `<day>` (zero-padded days since the epoch) | `pulls`, `expires_at` |
//! | count claim      | `COUNTED#<id>`       | `META`               | `expires_at`                              |
//!
//! Each pull is one transaction: its claim (which fails if the count was made before, so a
//! redelivered event is counted once) and the counters it adds to. Pull and push times are
//! then moved forward only (a conditional update per item and batch), so events recorded out
//! of order keep the latest. Repository counters share
//! one partition, so that the most pulled are one query. Claims expire after a week and daily
//! counts after twice the window, by time to live.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
use berth_core::error::{RegistryError, Result};
use berth_core::statistics::{
    Count, DAILY_PULL_DAYS, DailyPulls, StatisticsStore, Usage, daily_window,
};
use berth_core::{Digest, RepositoryName};

use crate::DynamoMetadataStore;
use crate::error::sdk_error;
use crate::schema::{META, PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE, repository_pk};
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
    /// One more pull on the usage item `key`.
    fn pull_added(&self, key: Item) -> Result<TransactWriteItem> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression("ADD #pulls :one")
            .set_expression_attribute_names(Some(names(&[("#pulls", "pulls")])))
            .set_expression_attribute_values(Some(values(vec![(":one", n(1))])))
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// A pull's transaction: its claim and the counters it adds to.
    fn pull_items(&self, count: &Count, now_s: u64) -> Result<Vec<TransactWriteItem>> {
        let mut claim = key(format!("COUNTED#{}", count.id), META);
        claim.insert(TTL_ATTRIBUTE.to_owned(), n(now_s + CLAIM_SECONDS));
        let claim = Put::builder()
            .table_name(&self.table)
            .set_item(Some(claim))
            .condition_expression("attribute_not_exists(#sk)")
            .set_expression_attribute_names(Some(names(&[("#sk", SORT_KEY)])))
            .build()
            .map_err(build_error)?;
        let (repository, artifact) = usage_keys(count);
        let expires = (count.day() + 2 * DAILY_PULL_DAYS + 1) * 86_400;
        let daily = Update::builder()
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
        Ok(vec![
            TransactWriteItem::builder().put(claim).build(),
            self.pull_added(repository)?,
            self.pull_added(artifact)?,
            TransactWriteItem::builder().update(daily).build(),
        ])
    }

    /// Moves the time `name` of the usage item `key` to `at`, unless it holds a later one:
    /// DynamoDB has no maximum, so the update is conditional, and its failed condition is a
    /// later time kept.
    async fn keep_latest(&self, key: Item, name: &str, at: u64) -> Result<()> {
        let sent = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression("SET #time = :at")
            .condition_expression("attribute_not_exists(#time) OR #time < :at")
            .set_expression_attribute_names(Some(names(&[("#time", name)])))
            .set_expression_attribute_values(Some(values(vec![(":at", n(at))])))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk_error("UpdateItem", e)),
        }
    }
}

/// The usage items a count adds to: its repository's and its artifact's.
fn usage_keys(count: &Count) -> (Item, Item) {
    let repository = count.repository.as_str();
    (
        key(REPOSITORIES_PARTITION, repository),
        key(repository_pk(repository), format!("STATS#{}", count.digest)),
    )
}

#[async_trait]
impl StatisticsStore for DynamoMetadataStore {
    async fn record(&self, counts: &[Count]) -> Result<()> {
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        // The latest pull and push time of each usage item in the batch, moved once each
        // after the counts (a time kept is the same whichever delivery sets it).
        let mut latest: BTreeMap<(String, String, &str), u64> = BTreeMap::new();
        for count in counts {
            if count.pull {
                // A failed condition is a claim made before: a redelivery, counted already.
                let (Outcome::Committed | Outcome::ConditionFailed) =
                    self.transact(self.pull_items(count, now_s)?).await?;
            }
            let name = if count.pull { "last_pull" } else { "pushed" };
            let (repository, artifact) = usage_keys(count);
            for item in [repository, artifact] {
                let pk = string_attr(&item, PARTITION_KEY)?.to_owned();
                let sk = string_attr(&item, SORT_KEY)?.to_owned();
                let at = latest.entry((pk, sk, name)).or_default();
                *at = (*at).max(count.at_ms);
            }
        }
        for ((pk, sk, name), at) in latest {
            self.keep_latest(key(pk, sk), name, at).await?;
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
