//! [`DynamoMetadataStore`]: the [`MetadataStore`] port over one DynamoDB table, laid out as the
//! crate documentation describes.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, DeleteRequest, KeysAndAttributes, Put, PutRequest, TransactWriteItem,
    WriteRequest,
};
use berth_core::error::{ErrorCode, RegistryError, Result};
use berth_core::manifest::ReferrerDescriptor;
use berth_core::ports::{ManifestRecord, MetadataStore, UploadSession};
use berth_core::{Digest, RepositoryName, Tag, UploadId};
use bytes::Bytes;
use futures_util::future::try_join_all;

use crate::error::{TRANSIENT_CANCELLATIONS, corrupt, sdk_error};
use crate::schema::{
    CATALOG_INDEX, CATALOG_PARTITION, CATALOG_PARTITION_KEY, CATALOG_SORT_KEY, META, PARTITION_KEY,
    SORT_KEY, TAG_END, TAG_PREFIX, TTL_ATTRIBUTE, blob_link_sk, build_error, manifest_sk, part_sk,
    parts_prefix, referrer_sk, referrers_prefix, repository_pk, tag_sk, upload_pk,
};

/// Manifest bytes plus media type plus referrer descriptor up to this size live inline in
/// the manifest and tag items; larger manifests are split into parts. DynamoDB items are
/// limited to 400 KB, keys and attribute names included.
pub const INLINE_LIMIT: usize = 300 * 1024;
/// The manifest bytes one part item holds.
pub const PART_BYTES: usize = 350 * 1024;
/// DynamoDB's limits on one request. A transaction's payload is limited to 4 MB; its items
/// are kept to this estimate of their size, which leaves room for the encoding.
pub(crate) const TRANSACTION_ITEMS: usize = 100;
const TRANSACTION_BYTES: usize = 3 * 1024 * 1024;
const BATCH_GET_KEYS: usize = 100;
const BATCH_WRITE_ITEMS: usize = 25;
/// Sort key values in key conditions are limited to 1024 bytes; listing bounds are cut to
/// this many (no tag or repository name comes close).
const KEY_BOUND_BYTES: usize = 1000;
/// How often a write that lost a race to a concurrent one is tried again before
/// `UNAVAILABLE`, and the first back-off.
pub(crate) const WRITE_ATTEMPTS: u32 = 8;
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// Upload sessions untouched for this long are removed by DynamoDB's time to live.
const UPLOAD_IDLE_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Attribute names, besides the keys in [`crate::schema`].
pub(crate) mod attr {
    pub const DIGEST: &str = "digest";
    pub const MEDIA_TYPE: &str = "media_type";
    pub const SIZE: &str = "size";
    pub const BYTES: &str = "bytes";
    pub const PARTS: &str = "parts";
    pub const GENERATION: &str = "generation";
    pub const REVISION: &str = "revision";
    pub const SUBJECT: &str = "subject";
    pub const REFERRER: &str = "referrer";
    pub const SESSION: &str = "session";
}

pub(crate) type Item = HashMap<String, AttributeValue>;

/// Registry metadata in one DynamoDB table.
#[derive(Clone)]
pub struct DynamoMetadataStore {
    pub(crate) client: Client,
    pub(crate) table: String,
}

impl std::fmt::Debug for DynamoMetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoMetadataStore")
            .finish_non_exhaustive()
    }
}

impl DynamoMetadataStore {
    /// A store over the existing table `table`, reached through `client` (built once per
    /// process by the composition root). Creates nothing: see [`crate::create_table`].
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

// --- small helpers ---------------------------------------------------------------------------

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

fn optional_string_attr<'a>(item: &'a Item, name: &str) -> Result<Option<&'a str>> {
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
fn item_size(item: &Item) -> usize {
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

fn take_bytes(item: &mut Item) -> Option<Vec<u8>> {
    match item.remove(attr::BYTES) {
        Some(AttributeValue::B(blob)) => Some(blob.into_inner()),
        _ => None,
    }
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

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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

    /// The tag item still points at `digest`.
    fn points_at(digest: &str) -> Self {
        Self::new(
            "#digest = :digest",
            &[("#digest", attr::DIGEST)],
            vec![(":digest", s(digest))],
        )
    }
}

/// A query of one partition (or of the catalog index), page by page.
#[derive(Debug)]
pub(crate) struct Query {
    index: Option<&'static str>,
    key_condition: String,
    filter: Option<String>,
    pub(crate) projection: Option<String>,
    pub(crate) names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
    consistent: bool,
}

impl Query {
    /// The items of partition `pk` whose sort key is between `low` and `high`, inclusive.
    fn between(pk: &str, low: &str, high: &str) -> Self {
        Self {
            index: None,
            key_condition: "#pk = :pk AND #sk BETWEEN :low AND :high".to_owned(),
            filter: None,
            projection: None,
            names: names(&[("#pk", PARTITION_KEY), ("#sk", SORT_KEY)]),
            values: values(vec![(":pk", s(pk)), (":low", s(low)), (":high", s(high))]),
            consistent: true,
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
    fn keys_only(mut self) -> Self {
        self.projection = Some("#sk".to_owned());
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

// --- manifests as items ----------------------------------------------------------------------

/// A manifest as `put_manifest` writes it.
struct Content<'a> {
    record: &'a ManifestRecord,
    /// The subject's digest and the referrer descriptor as JSON.
    referrer: Option<(String, String)>,
    /// Whether the bytes fit in the manifest and tag items.
    inline: bool,
}

impl<'a> Content<'a> {
    fn new(record: &'a ManifestRecord) -> Result<Self> {
        let referrer = match &record.referrer {
            None => None,
            Some((subject, descriptor)) => {
                let json = serde_json::to_string(descriptor).map_err(RegistryError::internal)?;
                Some((subject.to_string(), json))
            }
        };
        let described = record.media_type.len() + referrer.as_ref().map_or(0, |(_, j)| j.len());
        if described > INLINE_LIMIT {
            return Err(RegistryError::new(
                ErrorCode::ManifestInvalid,
                "the manifest's media type and annotations are too large to index",
            ));
        }
        Ok(Self {
            record,
            inline: described + record.bytes.len() <= INLINE_LIMIT,
            referrer,
        })
    }

    fn digest(&self) -> &str {
        self.record.digest.as_str()
    }

    fn part_count(&self) -> usize {
        self.record.bytes.len().div_ceil(PART_BYTES)
    }

    /// What the manifest item and a tag item share: how to serve the manifest.
    fn describe(&self, item: &mut Item) {
        item.insert(attr::MEDIA_TYPE.to_owned(), s(&self.record.media_type));
        item.insert(attr::SIZE.to_owned(), n(self.record.bytes.len() as u64));
        if let Some((subject, json)) = &self.referrer {
            item.insert(attr::SUBJECT.to_owned(), s(subject));
            item.insert(attr::REFERRER.to_owned(), s(json));
        }
        if self.inline {
            item.insert(
                attr::BYTES.to_owned(),
                AttributeValue::B(Blob::new(self.record.bytes.to_vec())),
            );
        } else {
            item.insert(attr::PARTS.to_owned(), n(self.part_count() as u64));
        }
    }

    /// The manifest item. `generation` names the part items, for a split manifest.
    fn manifest_item(&self, pk: &str, revision: &str, generation: Option<&str>) -> Item {
        let mut item = key(pk, manifest_sk(self.digest()));
        self.describe(&mut item);
        item.insert(attr::REVISION.to_owned(), s(revision));
        if let Some(generation) = generation {
            item.insert(attr::GENERATION.to_owned(), s(generation));
        }
        item
    }

    fn tag_item(&self, pk: &str, tag_sk: String) -> Item {
        let mut item = key(pk, tag_sk);
        self.describe(&mut item);
        item.insert(attr::DIGEST.to_owned(), s(self.digest()));
        item
    }

    fn referrer_item(&self, pk: &str) -> Option<Item> {
        let (subject, json) = self.referrer.as_ref()?;
        let mut item = key(pk, referrer_sk(subject, self.digest()));
        item.insert(attr::REFERRER.to_owned(), s(json));
        Some(item)
    }

    fn part_items(&self, pk: &str, generation: &str) -> Vec<Item> {
        self.record
            .bytes
            .chunks(PART_BYTES)
            .enumerate()
            .map(|(index, chunk)| {
                let mut item = key(pk, part_sk(self.digest(), generation, index));
                item.insert(
                    attr::BYTES.to_owned(),
                    AttributeValue::B(Blob::new(chunk.to_vec())),
                );
                item
            })
            .collect()
    }
}

/// The repository item: it exists once anything was stored in the repository, and puts the
/// repository in the catalog index.
fn repository_item(repository: &str) -> Item {
    let mut item = key(repository_pk(repository), META);
    item.insert(CATALOG_PARTITION_KEY.to_owned(), s(CATALOG_PARTITION));
    item.insert(CATALOG_SORT_KEY.to_owned(), s(repository));
    item
}

/// A manifest or tag item that holds the bytes, as a record.
fn inline_record(digest: Digest, mut item: Item) -> Result<ManifestRecord> {
    let bytes = take_bytes(&mut item).ok_or_else(|| corrupt("a manifest's bytes"))?;
    Ok(ManifestRecord {
        digest,
        media_type: string_attr(&item, attr::MEDIA_TYPE)?.to_owned(),
        bytes: Bytes::from(bytes),
        referrer: referrer_of(&item)?,
    })
}

fn referrer_of(item: &Item) -> Result<Option<(Digest, ReferrerDescriptor)>> {
    let Some(subject) = optional_string_attr(item, attr::SUBJECT)? else {
        return Ok(None);
    };
    let subject = subject
        .parse()
        .map_err(|_| corrupt("a manifest's subject"))?;
    let descriptor = serde_json::from_str(string_attr(item, attr::REFERRER)?)
        .map_err(|_| corrupt("a referrer descriptor"))?;
    Ok(Some((subject, descriptor)))
}

/// What `put_manifest` and `delete_manifest` need to know of a stored manifest item.
#[derive(Debug)]
struct StoredManifest {
    revision: String,
    media_type: String,
    subject: Option<String>,
    /// The generation and number of its part items, for a split manifest.
    parts: Option<(String, usize)>,
}

// --- requests --------------------------------------------------------------------------------

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
                Ok(_) => return Ok(Outcome::Committed),
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
            if codes.iter().any(|code| code == "ConditionalCheckFailed") {
                return Ok(Outcome::ConditionFailed);
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
    async fn query_page(
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
        let mut listed = Vec::new();
        let mut start = None;
        while listed.len() < limit {
            let want = limit - listed.len() + usize::from(after.is_some());
            let (page, next) = self.query_page(query, start, Some(want)).await?;
            for item in &page {
                let name = name_of(item)?;
                if after.is_some_and(|after| name.as_str() <= after) {
                    continue;
                }
                listed.push(name);
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
    async fn batch_get(
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
    async fn batch_write(&self, requests: Vec<WriteRequest>) -> Result<()> {
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

    async fn write_parts(&self, pk: &str, content: &Content<'_>, generation: &str) -> Result<()> {
        let requests = content
            .part_items(pk, generation)
            .into_iter()
            .map(|item| {
                let put = PutRequest::builder().set_item(Some(item)).build();
                Ok(WriteRequest::builder()
                    .put_request(put.map_err(build_error)?)
                    .build())
            })
            .collect::<Result<Vec<_>>>()?;
        self.batch_write(requests).await
    }

    /// Removes the part items of one generation. Only called once no manifest item names
    /// that generation any more, so no reader can be assembling them.
    async fn delete_parts(&self, pk: &str, digest: &str, generation: &str, count: usize) {
        let requests = (0..count)
            .map(|index| {
                let delete = DeleteRequest::builder()
                    .set_key(Some(key(pk, part_sk(digest, generation, index))))
                    .build();
                Ok(WriteRequest::builder()
                    .delete_request(delete.map_err(build_error)?)
                    .build())
            })
            .collect::<Result<Vec<_>>>();
        // The manifest is already consistent without them: left-over parts are unreachable
        // and cost only storage.
        if let Err(e) = async { self.batch_write(requests?).await }.await {
            tracing::warn!(
                error = %e,
                digest,
                "metadata store: removing the parts of a replaced manifest failed"
            );
        }
    }

    /// The manifest item of `digest` in partition `pk`, without its bytes.
    async fn stored_manifest(&self, pk: &str, digest: &str) -> Result<Option<StoredManifest>> {
        let projection = (
            "#revision, #media_type, #subject, #parts, #generation",
            &[
                ("#revision", attr::REVISION),
                ("#media_type", attr::MEDIA_TYPE),
                ("#subject", attr::SUBJECT),
                ("#parts", attr::PARTS),
                ("#generation", attr::GENERATION),
            ][..],
        );
        let Some(item) = self
            .get(key(pk, manifest_sk(digest)), Some(projection))
            .await?
        else {
            return Ok(None);
        };
        let parts = match optional_string_attr(&item, attr::GENERATION)? {
            None => None,
            Some(generation) => {
                let count = number_attr(&item, attr::PARTS)?;
                let count = usize::try_from(count).map_err(|_| corrupt("a part count"))?;
                Some((generation.to_owned(), count))
            }
        };
        Ok(Some(StoredManifest {
            revision: string_attr(&item, attr::REVISION)?.to_owned(),
            media_type: string_attr(&item, attr::MEDIA_TYPE)?.to_owned(),
            subject: optional_string_attr(&item, attr::SUBJECT)?.map(str::to_owned),
            parts,
        }))
    }

    /// The sort keys of the tags in partition `pk` that point at `digest`. Tags are keyed by
    /// name, so this reads the repository's tag items (1 MB a request) and filters them.
    async fn tags_pointing_at(&self, pk: &str, digest: &str) -> Result<Vec<String>> {
        let mut query = Query::between(pk, TAG_PREFIX, TAG_END).keys_only();
        query.filter = Some("#digest = :digest".to_owned());
        query
            .names
            .insert("#digest".to_owned(), attr::DIGEST.to_owned());
        query.values.insert(":digest".to_owned(), s(digest));
        self.query_all(&query)
            .await?
            .iter()
            .map(|item| string_attr(item, SORT_KEY).map(str::to_owned))
            .collect()
    }

    /// The manifest `digest` in partition `pk`, read with one Query: the manifest item sorts
    /// first, and a split manifest's parts follow it.
    async fn read_manifest(&self, pk: &str, digest: &Digest) -> Result<Option<ManifestRecord>> {
        // A manifest replaced or deleted while its parts were read is read again.
        for _ in 0..WRITE_ATTEMPTS {
            let head_sk = manifest_sk(digest.as_str());
            let query = Query::prefixed(pk, &head_sk);
            let (page, next) = self.query_page(&query, None, None).await?;
            let mut page = page.into_iter();
            let head = match page.next() {
                Some(item) if string_attr(&item, SORT_KEY)? == head_sk => item,
                _ => return Ok(None),
            };
            if head.contains_key(attr::BYTES) {
                return inline_record(digest.clone(), head).map(Some);
            }
            if let Some(record) = self.assemble(&query, head, page, next, digest).await? {
                return Ok(Some(record));
            }
        }
        Err(RegistryError::unavailable(
            "metadata store: a split manifest kept changing while it was read",
        ))
    }

    /// Joins the parts of a split manifest, following the query's pages. `None` when parts
    /// are missing: the manifest was deleted or replaced while it was read.
    async fn assemble(
        &self,
        query: &Query,
        head: Item,
        mut page: std::vec::IntoIter<Item>,
        mut next: Option<Item>,
        digest: &Digest,
    ) -> Result<Option<ManifestRecord>> {
        let generation = string_attr(&head, attr::GENERATION)?;
        let count = number_attr(&head, attr::PARTS)?;
        let size = number_attr(&head, attr::SIZE)?;
        let prefix = parts_prefix(digest.as_str(), generation);
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        let mut found = 0;
        while found < count {
            for mut part in page.by_ref() {
                let sk = string_attr(&part, SORT_KEY)?;
                let Some(index) = sk.strip_prefix(&prefix) else {
                    continue;
                };
                if index.parse::<u64>().ok() != Some(found) {
                    return Ok(None);
                }
                bytes.extend(take_bytes(&mut part).ok_or_else(|| corrupt("a manifest part"))?);
                found += 1;
            }
            if found == count {
                break;
            }
            match next.take() {
                Some(start) => {
                    let (more, after) = self.query_page(query, Some(start), None).await?;
                    page = more.into_iter();
                    next = after;
                }
                None => return Ok(None),
            }
        }
        if bytes.len() as u64 != size {
            return Err(corrupt("a split manifest"));
        }
        Ok(Some(ManifestRecord {
            digest: digest.clone(),
            media_type: string_attr(&head, attr::MEDIA_TYPE)?.to_owned(),
            bytes: Bytes::from(bytes),
            referrer: referrer_of(&head)?,
        }))
    }

    /// The tag, referrer and repository items `put_manifest` writes with the manifest item.
    fn companions(
        &self,
        pk: &str,
        repository: &str,
        content: &Content<'_>,
        tag: Option<&Tag>,
    ) -> Result<Vec<Put>> {
        let mut puts = Vec::new();
        if let Some(tag) = tag {
            puts.push(self.put(content.tag_item(pk, tag_sk(tag.as_str())), None)?);
        }
        if let Some(item) = content.referrer_item(pk) {
            puts.push(self.put(item, None)?);
        }
        puts.push(self.put(repository_item(repository), None)?);
        Ok(puts)
    }

    /// `put_manifest` when the manifest may already be stored differently (another media
    /// type) or is split: read what is stored, then write on the condition that it did not
    /// change. Returns `false` when it did, to be tried again.
    async fn put_manifest_checked(
        &self,
        repository: &str,
        content: &Content<'_>,
        tag: Option<&Tag>,
        revision: &str,
        parts_written: &mut Option<String>,
    ) -> Result<bool> {
        let pk = repository_pk(repository);
        let digest = content.digest();
        let stored = self.stored_manifest(&pk, digest).await?;

        // Parts are written before the manifest item names them. A split manifest stored
        // again reuses the parts of the stored one: the same digest means the same bytes.
        let generation = if content.inline {
            None
        } else {
            match stored.as_ref().and_then(|m| m.parts.as_ref()) {
                Some((generation, count)) if *count == content.part_count() => {
                    Some(generation.clone())
                }
                _ => {
                    if parts_written.is_none() {
                        self.write_parts(&pk, content, revision).await?;
                        *parts_written = Some(revision.to_owned());
                    }
                    parts_written.clone()
                }
            }
        };

        let condition = match &stored {
            Some(stored) => Condition::new(
                "#revision = :revision",
                &[("#revision", attr::REVISION)],
                vec![(":revision", s(&stored.revision))],
            ),
            None => Condition::absent(),
        };
        let mut puts = vec![self.put(
            content.manifest_item(&pk, revision, generation.as_deref()),
            Some(condition),
        )?];
        puts.extend(self.companions(&pk, repository, content, tag)?);

        // Tags hold a copy of what they serve: when the media type changed, every tag that
        // points at this manifest is rewritten too, in the same transaction as far as it
        // holds them.
        let mut overflow = Vec::new();
        let mut budget =
            TRANSACTION_BYTES.saturating_sub(puts.iter().map(|put| item_size(&put.item)).sum());
        if stored
            .as_ref()
            .is_some_and(|stored| stored.media_type != content.record.media_type)
        {
            let own = tag.map(|tag| tag_sk(tag.as_str()));
            for sk in self.tags_pointing_at(&pk, digest).await? {
                if own.as_ref() == Some(&sk) {
                    continue;
                }
                let put = self.put(
                    content.tag_item(&pk, sk),
                    Some(Condition::points_at(digest)),
                )?;
                let size = item_size(&put.item);
                if puts.len() < TRANSACTION_ITEMS && size <= budget {
                    budget -= size;
                    puts.push(put);
                } else {
                    overflow.push(put);
                }
            }
        }

        let items = puts
            .into_iter()
            .map(|put| TransactWriteItem::builder().put(put).build())
            .collect();
        if let Outcome::ConditionFailed = self.transact(items).await? {
            return Ok(false);
        }
        // More tags than one transaction holds: the rest follow, each only if it still
        // points at this manifest. Until then they serve the previous media type.
        for put in overflow {
            self.put_item(put).await?;
        }
        if let Some((old, count)) = stored.and_then(|stored| stored.parts)
            && generation.as_ref() != Some(&old)
        {
            self.delete_parts(&pk, digest, &old, count).await;
        }
        if let Some(ours) = parts_written.as_ref()
            && generation.as_ref() != Some(ours)
        {
            self.delete_parts(&pk, digest, ours, content.part_count())
                .await;
        }
        Ok(true)
    }
}

fn non_empty_string(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

pub(crate) fn lost_races(operation: &str) -> RegistryError {
    RegistryError::unavailable(format!(
        "metadata store: {operation} lost {WRITE_ATTEMPTS} races with concurrent writes"
    ))
}

// --- the port --------------------------------------------------------------------------------

#[async_trait]
impl MetadataStore for DynamoMetadataStore {
    async fn manifest(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<ManifestRecord>> {
        self.read_manifest(&repository_pk(repository.as_str()), digest)
            .await
    }

    async fn tagged_manifest(
        &self,
        repository: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<ManifestRecord>> {
        let pk = repository_pk(repository.as_str());
        let Some(item) = self.get(key(&pk, tag_sk(tag.as_str())), None).await? else {
            return Ok(None);
        };
        let digest: Digest = string_attr(&item, attr::DIGEST)?
            .parse()
            .map_err(|_| corrupt("a tag's digest"))?;
        if item.contains_key(attr::BYTES) {
            return inline_record(digest, item).map(Some);
        }
        self.read_manifest(&pk, &digest).await
    }

    async fn manifests_present(
        &self,
        repository: &RepositoryName,
        digests: &[Digest],
    ) -> Result<Vec<bool>> {
        let sort_keys: Vec<String> = digests.iter().map(|d| manifest_sk(d.as_str())).collect();
        let distinct: Vec<String> = sort_keys
            .iter()
            .collect::<HashSet<_>>()
            .into_iter()
            .cloned()
            .collect();
        let found = self
            .batch_get(&repository_pk(repository.as_str()), &distinct, &[])
            .await?;
        Ok(sort_keys.iter().map(|sk| found.contains_key(sk)).collect())
    }

    async fn put_manifest(
        &self,
        repository: &RepositoryName,
        manifest: &ManifestRecord,
        tag: Option<&Tag>,
    ) -> Result<()> {
        let content = Content::new(manifest)?;
        let repository = repository.as_str();
        let pk = repository_pk(repository);
        // Every write of the manifest item gets a new revision, so that a concurrent
        // delete_manifest notices that tags may have been added.
        let revision = token();
        let mut parts_written = None;
        let mut delay = FIRST_BACKOFF;

        if content.inline {
            // The common case, one request: the manifest item is written unless it is stored
            // with another media type, which would leave its tags' copies stale.
            let condition = Condition::new(
                "attribute_not_exists(#sk) OR #media_type = :media_type",
                &[("#sk", SORT_KEY), ("#media_type", attr::MEDIA_TYPE)],
                vec![(":media_type", s(&manifest.media_type))],
            );
            let mut puts =
                vec![self.put(content.manifest_item(&pk, &revision, None), Some(condition))?];
            puts.extend(self.companions(&pk, repository, &content, tag)?);
            let items = puts
                .into_iter()
                .map(|put| TransactWriteItem::builder().put(put).build())
                .collect();
            if let Outcome::Committed = self.transact(items).await? {
                return Ok(());
            }
        }
        for _ in 0..WRITE_ATTEMPTS {
            if self
                .put_manifest_checked(repository, &content, tag, &revision, &mut parts_written)
                .await?
            {
                return Ok(());
            }
            back_off(&mut delay).await;
        }
        Err(lost_races("put_manifest"))
    }

    async fn delete_manifest(&self, repository: &RepositoryName, digest: &Digest) -> Result<bool> {
        let pk = repository_pk(repository.as_str());
        let digest = digest.as_str();
        let mut delay = FIRST_BACKOFF;
        for _ in 0..WRITE_ATTEMPTS {
            let Some(stored) = self.stored_manifest(&pk, digest).await? else {
                return Ok(false);
            };
            let tags = self.tags_pointing_at(&pk, digest).await?;
            // The manifest item is removed only if no put_manifest rewrote it since it was
            // read (a put may have added a tag), each tag only if it still points here.
            let mut deletes = vec![self.delete(
                key(&pk, manifest_sk(digest)),
                Some(Condition::new(
                    "#revision = :revision",
                    &[("#revision", attr::REVISION)],
                    vec![(":revision", s(&stored.revision))],
                )),
            )?];
            if let Some(subject) = &stored.subject {
                deletes.push(self.delete(key(&pk, referrer_sk(subject, digest)), None)?);
            }
            let mut overflow = Vec::new();
            for sk in tags {
                let delete = self.delete(key(&pk, sk), Some(Condition::points_at(digest)))?;
                if deletes.len() < TRANSACTION_ITEMS {
                    deletes.push(delete);
                } else {
                    overflow.push(delete);
                }
            }
            let items = deletes
                .into_iter()
                .map(|delete| TransactWriteItem::builder().delete(delete).build())
                .collect();
            match self.transact(items).await? {
                Outcome::ConditionFailed => back_off(&mut delay).await,
                Outcome::Committed => {
                    for delete in overflow {
                        self.delete_item(delete).await?;
                    }
                    if let Some((generation, count)) = &stored.parts {
                        self.delete_parts(&pk, digest, generation, *count).await;
                    }
                    return Ok(true);
                }
            }
        }
        Err(lost_races("delete_manifest"))
    }

    async fn delete_tag(&self, repository: &RepositoryName, tag: &Tag) -> Result<bool> {
        let pk = repository_pk(repository.as_str());
        let delete = self.delete(key(pk, tag_sk(tag.as_str())), Some(Condition::exists()))?;
        self.delete_item(delete).await
    }

    async fn tags(
        &self,
        repository: &RepositoryName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let low = format!("{TAG_PREFIX}{}", key_bound(after.unwrap_or("")));
        let query = Query::between(&repository_pk(repository.as_str()), &low, TAG_END).keys_only();
        self.list(&query, after, limit, |item| {
            let sk = string_attr(item, SORT_KEY)?;
            sk.strip_prefix(TAG_PREFIX)
                .map(str::to_owned)
                .ok_or_else(|| corrupt("a tag's key"))
        })
        .await
    }

    async fn repositories(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let query = Query::catalog(CATALOG_PARTITION, after);
        self.list(&query, after, limit, |item| {
            string_attr(item, CATALOG_SORT_KEY).map(str::to_owned)
        })
        .await
    }

    async fn repository_exists(&self, repository: &RepositoryName) -> Result<bool> {
        let key = key(repository_pk(repository.as_str()), META);
        let found = self
            .get(key, Some(("#pk", &[("#pk", PARTITION_KEY)])))
            .await?;
        Ok(found.is_some())
    }

    async fn referrers(
        &self,
        repository: &RepositoryName,
        subject: &Digest,
    ) -> Result<Vec<ReferrerDescriptor>> {
        let pk = repository_pk(repository.as_str());
        let query = Query::prefixed(&pk, &referrers_prefix(subject.as_str()));
        self.query_all(&query)
            .await?
            .iter()
            .map(|item| {
                serde_json::from_str(string_attr(item, attr::REFERRER)?)
                    .map_err(|_| corrupt("a referrer descriptor"))
            })
            .collect()
    }

    async fn link_blob(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        let repository = repository.as_str();
        let mut link = key(repository_pk(repository), blob_link_sk(digest.as_str()));
        link.insert(attr::SIZE.to_owned(), n(size));
        let items = vec![
            TransactWriteItem::builder()
                .put(self.put(repository_item(repository), None)?)
                .build(),
            TransactWriteItem::builder()
                .put(self.put(link, None)?)
                .build(),
        ];
        match self.transact(items).await? {
            Outcome::Committed => Ok(()),
            Outcome::ConditionFailed => Err(RegistryError::internal(
                "DynamoDB refused an unconditional write on a condition",
            )),
        }
    }

    async fn blob_links(
        &self,
        repository: &RepositoryName,
        digests: &[Digest],
    ) -> Result<Vec<Option<u64>>> {
        let sort_keys: Vec<String> = digests.iter().map(|d| blob_link_sk(d.as_str())).collect();
        let distinct: Vec<String> = sort_keys
            .iter()
            .collect::<HashSet<_>>()
            .into_iter()
            .cloned()
            .collect();
        let found = self
            .batch_get(
                &repository_pk(repository.as_str()),
                &distinct,
                &[attr::SIZE],
            )
            .await?;
        sort_keys
            .iter()
            .map(|sk| {
                found
                    .get(sk)
                    .map(|item| number_attr(item, attr::SIZE))
                    .transpose()
            })
            .collect()
    }

    async fn unlink_blob(&self, repository: &RepositoryName, digest: &Digest) -> Result<bool> {
        let key = key(
            repository_pk(repository.as_str()),
            blob_link_sk(digest.as_str()),
        );
        let delete = self.delete(key, Some(Condition::exists()))?;
        self.delete_item(delete).await
    }

    async fn create_upload(&self, session: &UploadSession) -> Result<()> {
        let put = self.put(upload_item(session)?, None)?;
        self.put_item(put).await.map(drop)
    }

    async fn upload(&self, id: &UploadId) -> Result<Option<UploadSession>> {
        let Some(item) = self.get(key(upload_pk(id.as_str()), META), None).await? else {
            return Ok(None);
        };
        serde_json::from_str(string_attr(&item, attr::SESSION)?)
            .map(Some)
            .map_err(|_| corrupt("an upload session"))
    }

    async fn update_upload(&self, session: &UploadSession, expected_size: u64) -> Result<bool> {
        // A missing session fails the comparison too, so nothing is created.
        let condition = Condition::new(
            "#size = :expected",
            &[("#size", attr::SIZE)],
            vec![(":expected", n(expected_size))],
        );
        let put = self.put(upload_item(session)?, Some(condition))?;
        self.put_item(put).await
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<()> {
        let delete = self.delete(key(upload_pk(id.as_str()), META), None)?;
        self.delete_item(delete).await.map(drop)
    }
}

/// An upload session's item: the size its conditional update compares, the session as JSON,
/// and its expiry, renewed by every write.
fn upload_item(session: &UploadSession) -> Result<Item> {
    let json = serde_json::to_string(session).map_err(RegistryError::internal)?;
    let mut item = key(upload_pk(session.staged.id.as_str()), META);
    item.insert(attr::SIZE.to_owned(), n(session.staged.size));
    item.insert(attr::SESSION.to_owned(), s(json));
    item.insert(
        TTL_ATTRIBUTE.to_owned(),
        n(unix_now() + UPLOAD_IDLE_EXPIRY.as_secs()),
    );
    Ok(item)
}

#[cfg(test)]
mod tests {
    use berth_core::Algorithm;

    use super::*;

    fn record(len: usize, referrer_annotation: Option<usize>) -> ManifestRecord {
        let bytes = vec![b'x'; len];
        let digest = Digest::of(Algorithm::Sha256, &bytes);
        let referrer = referrer_annotation.map(|annotation| {
            let descriptor = ReferrerDescriptor {
                media_type: "application/vnd.oci.image.manifest.v1+json".to_owned(),
                digest: digest.clone(),
                size: len as u64,
                artifact_type: None,
                annotations: [("a".to_owned(), "v".repeat(annotation))].into(),
            };
            (Digest::of(Algorithm::Sha256, b"subject"), descriptor)
        });
        ManifestRecord {
            digest,
            media_type: "application/vnd.oci.image.manifest.v1+json".to_owned(),
            bytes: Bytes::from(bytes),
            referrer,
        }
    }

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

    #[test]
    fn small_manifests_are_inline_and_large_ones_split() {
        let small = record(4096, Some(100));
        let content = Content::new(&small).expect("content");
        assert!(content.inline);
        let item = content.tag_item("REPO#r", tag_sk("t"));
        assert!(item.contains_key(attr::BYTES) && item.contains_key(attr::REFERRER));

        let large = record(INLINE_LIMIT, None);
        let content = Content::new(&large).expect("content");
        assert!(!content.inline, "the media type counts too");
        assert_eq!(content.part_count(), 1);
        let item = content.tag_item("REPO#r", tag_sk("t"));
        assert!(!item.contains_key(attr::BYTES) && item.contains_key(attr::PARTS));
        let parts = content.part_items("REPO#r", "g");
        assert_eq!(parts.len(), 1);

        let four_mib = record(4 * 1024 * 1024, None);
        let content = Content::new(&four_mib).expect("content");
        let parts = content.part_items("REPO#r", "g");
        assert_eq!(parts.len(), content.part_count());
        assert_eq!(parts.len(), 12);
    }

    #[test]
    fn descriptors_too_large_to_index_are_refused() {
        let absurd = record(10, Some(INLINE_LIMIT));
        let err = Content::new(&absurd).err().expect("refused");
        assert_eq!(err.code(), ErrorCode::ManifestInvalid);
    }

    #[test]
    fn upload_items_expire_after_their_last_write() {
        let session = UploadSession {
            repository: "r".parse().expect("a name"),
            staged: berth_core::ports::StagedUpload {
                id: UploadId::generate(),
                size: 42,
                backend: Vec::new(),
            },
            hash: berth_core::digest::DigestHasher::new(Algorithm::Sha256).save(),
            started_at: 1_700_000_000,
        };
        let item = upload_item(&session).expect("item");
        assert_eq!(number_attr(&item, attr::SIZE).expect("size"), 42);
        assert!(number_attr(&item, TTL_ATTRIBUTE).expect("ttl") > unix_now());
    }
}
