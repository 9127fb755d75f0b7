//! The DynamoDB toolkit every store in this crate builds on: attribute values and keys,
//! conditions, queries followed page by page, conditional writes, transactions and batches
//! tried again with back-off.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, KeysAndAttributes, Put, ReturnValue, TransactWriteItem, Update,
    WriteRequest,
};
use berth_core::error::{RegistryError, Result};
use futures_util::future::try_join_all;

use crate::error::{TRANSIENT_CANCELLATIONS, corrupt, sdk_error};
use crate::schema::{
    CATALOG_INDEX, CATALOG_PARTITION_KEY, CATALOG_SORT_KEY, PARTITION_KEY, SORT_KEY, build_error,
};
use crate::store::DynamoMetadataStore;

/// DynamoDB's limits on one request. A transaction's payload is limited to 4 MB; its items
/// are kept to this estimate of their size, which leaves room for the encoding.
pub(crate) const TRANSACTION_ITEMS: usize = 100;
pub(crate) const TRANSACTION_BYTES: usize = 3 * 1024 * 1024;
const BATCH_GET_KEYS: usize = 100;
const BATCH_WRITE_ITEMS: usize = 25;
/// Sort key values in key conditions are limited to 1024 bytes; listing bounds are cut to
/// this many (no tag or repository name comes close).
const KEY_BOUND_BYTES: usize = 1000;
/// How often a write that lost a race to a concurrent one is tried again before
/// `UNAVAILABLE`, and the first back-off.
pub(crate) const WRITE_ATTEMPTS: u32 = 8;
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(10);

pub(crate) type Item = HashMap<String, AttributeValue>;

pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(crate) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(crate) fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([
        (PARTITION_KEY.to_owned(), s(pk)),
        (SORT_KEY.to_owned(), s(sk)),
    ])
}

pub(crate) fn string_attr<'a>(item: &'a Item, name: &str) -> Result<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value),
        _ => Err(corrupt(&format!("an item's {name:?}"))),
    }
}

pub(crate) fn optional_string_attr<'a>(item: &'a Item, name: &str) -> Result<Option<&'a str>> {
    match item.get(name) {
        None => Ok(None),
        Some(_) => string_attr(item, name).map(Some),
    }
}

pub(crate) fn number_attr(item: &Item, name: &str) -> Result<u64> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => value
            .parse()
            .map_err(|_| corrupt(&format!("an item's {name:?}"))),
        _ => Err(corrupt(&format!("an item's {name:?}"))),
    }
}

/// About what an item weighs in a request: its attribute names and values.
pub(crate) fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttributeValue::S(text) | AttributeValue::N(text) => text.len(),
                    AttributeValue::B(blob) => blob.as_ref().len(),
                    _ => 8,
                }
        })
        .sum()
}

/// A random token: manifest revisions and part generations.
pub(crate) fn token() -> String {
    let mut text = uuid::Uuid::new_v4().simple().to_string();
    text.truncate(16);
    text
}

/// `delay` plus up to as much again, so racing writers spread out.
pub(crate) async fn back_off(delay: &mut Duration) {
    let jitter = uuid::Uuid::new_v4().as_u128() % (delay.as_micros().max(1));
    let jitter = Duration::from_micros(u64::try_from(jitter).unwrap_or(0));
    tokio::time::sleep(*delay + jitter).await;
    *delay = (*delay * 2).min(Duration::from_secs(1));
}

/// The longest prefix of `bound` that fits in a key condition. Every stored name greater than
/// `bound` is also greater than (or equal to) its prefix, so a listing from the prefix, with
/// names up to `bound` dropped, is exact.
pub(crate) fn key_bound(bound: &str) -> &str {
    let mut end = bound.len().min(KEY_BOUND_BYTES);
    while !bound.is_char_boundary(end) {
        end -= 1;
    }
    &bound[..end]
}

pub(crate) fn names(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(placeholder, name)| ((*placeholder).to_owned(), (*name).to_owned()))
        .collect()
}

pub(crate) fn values(pairs: Vec<(&str, AttributeValue)>) -> HashMap<String, AttributeValue> {
    pairs
        .into_iter()
        .map(|(placeholder, value)| (placeholder.to_owned(), value))
        .collect()
}

fn non_empty<K, V>(map: HashMap<K, V>) -> Option<HashMap<K, V>> {
    (!map.is_empty()).then_some(map)
}

fn non_empty_string(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

pub(crate) fn lost_races(operation: &str) -> RegistryError {
    RegistryError::unavailable(format!(
        "metadata store: {operation} lost {WRITE_ATTEMPTS} races with concurrent writes"
    ))
}

/// A condition on a write, with its placeholders.
#[derive(Debug, Clone, Default)]
pub(crate) struct Condition {
    expression: String,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Condition {
    pub(crate) fn new(
        expression: &str,
        names_used: &[(&str, &str)],
        values_used: Vec<(&str, AttributeValue)>,
    ) -> Self {
        Self {
            expression: expression.to_owned(),
            names: names(names_used),
            values: values(values_used),
        }
    }

    /// The item exists.
    pub(crate) fn exists() -> Self {
        Self::new("attribute_exists(#sk)", &[("#sk", SORT_KEY)], vec![])
    }

    /// The item does not exist.
    pub(crate) fn absent() -> Self {
        Self::new("attribute_not_exists(#sk)", &[("#sk", SORT_KEY)], vec![])
    }
}

/// A query of one partition (or of the catalog index), page by page.
#[derive(Debug)]
pub(crate) struct Query {
    index: Option<&'static str>,
    key_condition: String,
    pub(crate) filter: Option<String>,
    pub(crate) projection: Option<String>,
    pub(crate) names: HashMap<String, String>,
    pub(crate) values: HashMap<String, AttributeValue>,
    consistent: bool,
    /// Sort keys in descending order.
    pub(crate) descending: bool,
}

impl Query {
    /// The items of partition `pk` whose sort key is between `low` and `high`, inclusive.
    pub(crate) fn between(pk: &str, low: &str, high: &str) -> Self {
        Self {
            index: None,
            key_condition: "#pk = :pk AND #sk BETWEEN :low AND :high".to_owned(),
            filter: None,
            projection: None,
            names: names(&[("#pk", PARTITION_KEY), ("#sk", SORT_KEY)]),
            values: values(vec![(":pk", s(pk)), (":low", s(low)), (":high", s(high))]),
            consistent: true,
            descending: false,
        }
    }

    /// The items of partition `pk` whose sort key starts with `prefix`.
    pub(crate) fn prefixed(pk: &str, prefix: &str) -> Self {
        Self {
            index: None,
            key_condition: "#pk = :pk AND begins_with(#sk, :prefix)".to_owned(),
            filter: None,
            projection: None,
            names: names(&[("#pk", PARTITION_KEY), ("#sk", SORT_KEY)]),
            values: values(vec![(":pk", s(pk)), (":prefix", s(prefix))]),
            consistent: true,
            descending: false,
        }
    }

    /// Every item of partition `pk`.
    pub(crate) fn partition(pk: &str) -> Self {
        Self {
            index: None,
            key_condition: "#pk = :pk".to_owned(),
            filter: None,
            projection: None,
            names: names(&[("#pk", PARTITION_KEY)]),
            values: values(vec![(":pk", s(pk))]),
            consistent: true,
            descending: false,
        }
    }

    /// The names one partition of the catalog index lists (repositories, users or projects),
    /// from just below `after`. Global secondary indexes are eventually consistent: a new
    /// name may appear a moment after its item was written.
    pub(crate) fn catalog(partition: &str, after: Option<&str>) -> Self {
        let mut query = Self {
            index: Some(CATALOG_INDEX),
            key_condition: "#catalog = :catalog".to_owned(),
            filter: None,
            projection: None,
            names: names(&[("#catalog", CATALOG_PARTITION_KEY)]),
            values: values(vec![(":catalog", s(partition))]),
            consistent: false,
            descending: false,
        };
        if let Some(after) = after.filter(|after| !after.is_empty()) {
            query.key_condition.push_str(" AND #name > :after");
            query
                .names
                .insert("#name".to_owned(), CATALOG_SORT_KEY.to_owned());
            query
                .values
                .insert(":after".to_owned(), s(key_bound(after)));
        }
        query
    }

    /// Only the sort key of each item.
    pub(crate) fn keys_only(mut self) -> Self {
        self.projection = Some("#sk".to_owned());
        self.names.insert("#sk".to_owned(), SORT_KEY.to_owned());
        self
    }
}

/// What a transaction did.
#[derive(Debug)]
pub(crate) enum Outcome {
    Committed,
    /// Cancelled because a condition failed.
    ConditionFailed,
}

impl DynamoMetadataStore {
    pub(crate) async fn get(
        &self,
        key: Item,
        projection: Option<(&str, &[(&str, &str)])>,
    ) -> Result<Option<Item>> {
        let (expression, projected) = match projection {
            Some((expression, used)) => (Some(expression.to_owned()), non_empty(names(used))),
            None => (None, None),
        };
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .set_projection_expression(expression)
            .set_expression_attribute_names(projected)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        Ok(output.item)
    }

    pub(crate) fn put(&self, item: Item, condition: Option<Condition>) -> Result<Put> {
        let condition = condition.unwrap_or_default();
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_condition_expression(non_empty_string(condition.expression))
            .set_expression_attribute_names(non_empty(condition.names))
            .set_expression_attribute_values(non_empty(condition.values))
            .build()
            .map_err(build_error)
    }

    pub(crate) fn delete(&self, key: Item, condition: Option<Condition>) -> Result<Delete> {
        let condition = condition.unwrap_or_default();
        Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .set_condition_expression(non_empty_string(condition.expression))
            .set_expression_attribute_names(non_empty(condition.names))
            .set_expression_attribute_values(non_empty(condition.values))
            .build()
            .map_err(build_error)
    }

    /// One PutItem; `false` when its condition failed.
    pub(crate) async fn put_item(&self, put: Put) -> Result<bool> {
        let sent = self
            .client
            .put_item()
            .table_name(put.table_name)
            .set_item(Some(put.item))
            .set_condition_expression(put.condition_expression)
            .set_expression_attribute_names(put.expression_attribute_names)
            .set_expression_attribute_values(put.expression_attribute_values)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(PutItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(sdk_error("PutItem", e)),
        }
    }

    /// One UpdateItem returning the item as updated; `None` when its condition failed.
    pub(crate) async fn update_item(&self, update: Update) -> Result<Option<Item>> {
        let sent = self
            .client
            .update_item()
            .table_name(update.table_name)
            .set_key(Some(update.key))
            .update_expression(update.update_expression)
            .set_condition_expression(update.condition_expression)
            .set_expression_attribute_names(update.expression_attribute_names)
            .set_expression_attribute_values(update.expression_attribute_values)
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match sent {
            Ok(output) => Ok(Some(output.attributes.unwrap_or_default())),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(sdk_error("UpdateItem", e)),
        }
    }

    /// One DeleteItem; `false` when its condition failed.
    pub(crate) async fn delete_item(&self, delete: Delete) -> Result<bool> {
        let sent = self
            .client
            .delete_item()
            .table_name(delete.table_name)
            .set_key(Some(delete.key))
            .set_condition_expression(delete.condition_expression)
            .set_expression_attribute_names(delete.expression_attribute_names)
            .set_expression_attribute_values(delete.expression_attribute_values)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(DeleteItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(sdk_error("DeleteItem", e)),
        }
    }

    /// One TransactWriteItems of at most [`TRANSACTION_ITEMS`] items. Cancellations by
    /// conflicting transactions or throttling are tried again; failed conditions are the
    /// caller's to handle.
    pub(crate) async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<Outcome> {
        Ok(match self.transact_checked(items).await? {
            Ok(()) => Outcome::Committed,
            Err(_) => Outcome::ConditionFailed,
        })
    }

    /// [`Self::transact`], telling which items' conditions failed (their positions) when it
    /// was cancelled for that.
    pub(crate) async fn transact_checked(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<std::result::Result<(), Vec<usize>>> {
        let mut delay = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            let err = match sent {
                Ok(_) => return Ok(Ok(())),
                Err(err) => err,
            };
            let codes: Vec<String> = match err.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => cancelled
                    .cancellation_reasons()
                    .iter()
                    .map(|reason| reason.code().unwrap_or("None").to_owned())
                    .collect(),
                _ => return Err(sdk_error("TransactWriteItems", err)),
            };
            let failed: Vec<usize> = codes
                .iter()
                .enumerate()
                .filter(|(_, code)| *code == "ConditionalCheckFailed")
                .map(|(index, _)| index)
                .collect();
            if !failed.is_empty() {
                return Ok(Err(failed));
            }
            let transient = codes
                .iter()
                .any(|code| TRANSIENT_CANCELLATIONS.contains(&code.as_str()));
            if !transient {
                return Err(RegistryError::internal(format!(
                    "DynamoDB TransactWriteItems cancelled: {codes:?}"
                )));
            }
            if attempt == WRITE_ATTEMPTS {
                return Err(RegistryError::unavailable(format!(
                    "DynamoDB TransactWriteItems cancelled {attempt} times: {codes:?}"
                )));
            }
            attempt += 1;
            back_off(&mut delay).await;
        }
    }

    /// One page of `query` from `start`, of at most `limit` items.
    pub(crate) async fn query_page(
        &self,
        query: &Query,
        start: Option<Item>,
        limit: Option<usize>,
    ) -> Result<(Vec<Item>, Option<Item>)> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .set_index_name(query.index.map(str::to_owned))
            .key_condition_expression(&query.key_condition)
            .set_filter_expression(query.filter.clone())
            .set_projection_expression(query.projection.clone())
            .set_expression_attribute_names(Some(query.names.clone()))
            .set_expression_attribute_values(Some(query.values.clone()))
            .consistent_read(query.consistent)
            .scan_index_forward(!query.descending)
            .set_exclusive_start_key(start)
            .set_limit(limit.map(|l| i32::try_from(l).unwrap_or(i32::MAX)))
            .send()
            .await
            .map_err(|e| sdk_error("Query", e))?;
        Ok((output.items.unwrap_or_default(), output.last_evaluated_key))
    }

    /// Every item `query` matches, across all pages.
    pub(crate) async fn query_all(&self, query: &Query) -> Result<Vec<Item>> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let (page, next) = self.query_page(query, start, None).await?;
            items.extend(page);
            match next {
                Some(next) => start = Some(next),
                None => return Ok(items),
            }
        }
    }

    /// Up to `limit` names, in key order, that `name_of` finds in the items of `query`, all
    /// greater than `after`. `query` starts at or just below `after`, so at most one item
    /// (equal to `after`) is dropped; DynamoDB's pages (1 MB each) are followed until `limit`
    /// names are found.
    pub(crate) async fn list(
        &self,
        query: &Query,
        after: Option<&str>,
        limit: usize,
        name_of: impl Fn(&Item) -> Result<String>,
    ) -> Result<Vec<String>> {
        self.list_entries(query, after, limit, |item| {
            let name = name_of(item)?;
            Ok(Some((name.clone(), name)))
        })
        .await
    }

    /// [`Self::list`] of entries: `entry_of` names each item and makes its entry, or skips
    /// it (`None`, for items of another kind that share the key range).
    pub(crate) async fn list_entries<T>(
        &self,
        query: &Query,
        after: Option<&str>,
        limit: usize,
        entry_of: impl Fn(&Item) -> Result<Option<(String, T)>>,
    ) -> Result<Vec<T>> {
        let mut listed = Vec::new();
        let mut start = None;
        while listed.len() < limit {
            let want = limit - listed.len() + usize::from(after.is_some());
            let (page, next) = self.query_page(query, start, Some(want)).await?;
            for item in &page {
                let Some((name, entry)) = entry_of(item)? else {
                    continue;
                };
                if after.is_some_and(|after| name.as_str() <= after) {
                    continue;
                }
                listed.push(entry);
                if listed.len() == limit {
                    break;
                }
            }
            match next {
                Some(next) => start = Some(next),
                None => break,
            }
        }
        Ok(listed)
    }

    /// BatchGetItem of the items `sort_keys` (distinct) in partition `pk`, 100 keys a request,
    /// unprocessed keys asked again. Returns the items found by sort key.
    pub(crate) async fn batch_get(
        &self,
        pk: &str,
        sort_keys: &[String],
        projected: &[&str],
    ) -> Result<HashMap<String, Item>> {
        let mut projection = vec![("#sk", SORT_KEY)];
        let placeholders: Vec<String> = (0..projected.len()).map(|i| format!("#a{i}")).collect();
        projection.extend(
            placeholders
                .iter()
                .map(String::as_str)
                .zip(projected.iter().copied()),
        );
        let expression = projection
            .iter()
            .map(|(placeholder, _)| *placeholder)
            .collect::<Vec<_>>()
            .join(", ");
        let batches = sort_keys.chunks(BATCH_GET_KEYS).map(|chunk| {
            let request = KeysAndAttributes::builder()
                .set_keys(Some(chunk.iter().map(|sk| key(pk, sk)).collect()))
                .consistent_read(true)
                .projection_expression(&expression)
                .set_expression_attribute_names(Some(names(&projection)))
                .build()
                .map_err(build_error);
            async move { self.batch_get_all(request?).await }
        });
        let found = try_join_all(batches).await?;
        found
            .into_iter()
            .flatten()
            .map(|item| Ok((string_attr(&item, SORT_KEY)?.to_owned(), item)))
            .collect()
    }

    /// BatchGetItem of whole items by their keys (distinct, in any partitions), 100 keys a
    /// request, unprocessed keys asked again. Returns the items found, in no order.
    pub(crate) async fn batch_get_items(&self, keys: Vec<Item>) -> Result<Vec<Item>> {
        let batches = keys.chunks(BATCH_GET_KEYS).map(|chunk| {
            let request = KeysAndAttributes::builder()
                .set_keys(Some(chunk.to_vec()))
                .consistent_read(true)
                .build()
                .map_err(build_error);
            async move { self.batch_get_all(request?).await }
        });
        let found = try_join_all(batches).await?;
        Ok(found.into_iter().flatten().collect())
    }

    async fn batch_get_all(&self, mut request: KeysAndAttributes) -> Result<Vec<Item>> {
        let mut found = Vec::new();
        let mut delay = FIRST_BACKOFF;
        for attempt in 1..=WRITE_ATTEMPTS {
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(|e| sdk_error("BatchGetItem", e))?;
            let items = output
                .responses
                .and_then(|mut responses| responses.remove(&self.table))
                .unwrap_or_default();
            found.extend(items);
            match output
                .unprocessed_keys
                .and_then(|mut unprocessed| unprocessed.remove(&self.table))
            {
                Some(rest) if !rest.keys().is_empty() => {
                    if attempt == WRITE_ATTEMPTS {
                        break;
                    }
                    request = rest;
                    back_off(&mut delay).await;
                }
                _ => return Ok(found),
            }
        }
        Err(RegistryError::unavailable(
            "DynamoDB BatchGetItem left keys unprocessed too many times",
        ))
    }

    /// BatchWriteItem of `requests`, 25 a request, unprocessed items sent again.
    pub(crate) async fn batch_write(&self, requests: Vec<WriteRequest>) -> Result<()> {
        let batches = requests.chunks(BATCH_WRITE_ITEMS).map(|chunk| async move {
            let mut pending = chunk.to_vec();
            let mut delay = FIRST_BACKOFF;
            for attempt in 1..=WRITE_ATTEMPTS {
                let output = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(|e| sdk_error("BatchWriteItem", e))?;
                pending = output
                    .unprocessed_items
                    .and_then(|mut unprocessed| unprocessed.remove(&self.table))
                    .unwrap_or_default();
                if pending.is_empty() {
                    return Ok(());
                }
                if attempt < WRITE_ATTEMPTS {
                    back_off(&mut delay).await;
                }
            }
            Err(RegistryError::unavailable(
                "DynamoDB BatchWriteItem left items unprocessed too many times",
            ))
        });
        try_join_all(batches).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bounds_fit_and_stay_on_char_boundaries() {
        assert_eq!(key_bound("v1"), "v1");
        let long = "é".repeat(KEY_BOUND_BYTES);
        let bound = key_bound(&long);
        assert!(bound.len() <= KEY_BOUND_BYTES && long.starts_with(bound));
        assert_eq!(bound.len(), KEY_BOUND_BYTES);
        let odd = format!("a{long}");
        assert_eq!(key_bound(&odd).len(), KEY_BOUND_BYTES - 1);
    }
}
