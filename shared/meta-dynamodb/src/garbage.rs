//! Garbage collection's records in the table: the [`GarbageIndex`] (a record per blob with
//! its reference count; candidates) and the [`GcHistory`] (runs and the schedule).
//!
//! | item             | `PK`            | `SK`                    | other attributes                          |
//! |------------------|-----------------|-------------------------|-------------------------------------------|
//! | blob record      | `BLOB#<digest>` | `META`                  | `size`, `refs`, `touched` (Unix ms), `state` (`live`, `collecting`, `collected`) |
//! | candidate        | `GCQ#<c>`       | `<digest>`              | (none); `<c>` is the digest's first hex character, 16 partitions |
//! | run id counter   | `GC#RUNS`       | `COUNTER`               | `last_id`                                 |
//! | run              | `GC#RUNS`       | `RUN#<id, 20 digits>`   | `record` (JSON)                           |
//! | schedule         | `GC#RUNS`       | `SCHEDULE`              | `record` (JSON)                           |
//! | references counted | `GC#RUNS`     | `COUNTED`               | `at` (Unix ms)                            |
//! | stored bytes     | `BLOB#TOTAL`    | `META`                  | `bytes`: the live and collecting blobs' (no digest is `TOTAL`: a claim writes it where it may write blob records) |
//!
//! A manifest put adds its references in the transaction that writes the manifest item on
//! the condition that it is new (`store/mod.rs`); a deletion drops them after its own
//! transaction, each blob then a candidate (a crash in between leaves a count too high: a
//! blob kept, never one lost). Candidates are spread over 16 partitions by the digest's
//! first hex character, so uploads do not all write one partition; they are listed in the
//! order (that character, digest).
//!
//! A table written before garbage collection has links and manifests but no blob records:
//! [`DynamoMetadataStore::count_blob_references`] counts them (with no pushes running) and
//! marks the table counted. A table created by [`crate::create_table`] is marked at once.
//! Collection refuses to run on a table that is not marked.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, PutRequest, TransactWriteItem, Update, WriteRequest,
};
use berth_core::error::{ErrorCode, RegistryError, Result};
use berth_core::gc::{
    BlobRecord, BlobState, Claim, GarbageIndex, GcHistory, GcProgress, GcRun, GcSchedule, GcStatus,
};
use berth_core::manifest::{Target, referenced_blobs};
use berth_core::ports::{MetadataStore, all_manifests};
use berth_core::{Digest, RepositoryName};

use crate::error::corrupt;
use crate::schema::{META, PARTITION_KEY, SORT_KEY, build_error, repository_pk};
use crate::store::DynamoMetadataStore;
use crate::toolkit::{
    Condition, Item, Query, TRANSACTION_ITEMS, key, key_bound, n, number_attr, s, string_attr,
};

const SIZE: &str = "size";
const REFS: &str = "refs";
const TOUCHED: &str = "touched";
const STATE: &str = "state";
const RECORD: &str = "record";
const LAST_ID: &str = "last_id";

const LIVE: &str = "live";
const COLLECTING: &str = "collecting";
const COLLECTED: &str = "collected";

const RUNS_PK: &str = "GC#RUNS";
const COUNTER_SK: &str = "COUNTER";
const SCHEDULE_SK: &str = "SCHEDULE";
const COUNTED_SK: &str = "COUNTED";
/// The stored bytes' partition: beside the blob records, which every claim may write.
const STORED_PK: &str = "BLOB#TOTAL";
const BYTES: &str = "bytes";
const RUN_PREFIX: &str = "RUN#";
/// Candidates per drop transaction: a condition check and a delete each.
const DROPS_PER_TRANSACTION: usize = TRANSACTION_ITEMS / 2;
const HEX: &str = "0123456789abcdef";

pub(crate) fn blob_pk(digest: &str) -> String {
    format!("BLOB#{digest}")
}

fn candidate_pk(digest: &str) -> String {
    let shard = digest
        .split_once(':')
        .and_then(|(_, hex)| hex.chars().next())
        .unwrap_or('0');
    format!("GCQ#{shard}")
}

fn run_sk(id: u64) -> String {
    format!("{RUN_PREFIX}{id:020}")
}

fn state_of(item: &Item) -> Result<BlobState> {
    Ok(match string_attr(item, STATE)? {
        LIVE => BlobState::Live,
        COLLECTING => BlobState::Collecting,
        COLLECTED => BlobState::Collected,
        _ => return Err(corrupt("a blob record's state")),
    })
}

fn record_of(digest: &Digest, item: &Item) -> Result<BlobRecord> {
    // A count taken before the table was counted may be below zero: none left.
    let refs = match item.get(REFS) {
        Some(AttributeValue::N(text)) => text.parse::<i64>().map_err(|_| corrupt("a count"))?,
        _ => 0,
    };
    Ok(BlobRecord {
        digest: digest.clone(),
        size: number_attr(item, SIZE)?,
        refs: u64::try_from(refs).unwrap_or(0),
        touched_ms: number_attr(item, TOUCHED)?,
        state: state_of(item)?,
    })
}

/// The blob record key of `digest`.
pub(crate) fn record_key(digest: &str) -> Item {
    key(blob_pk(digest), META)
}

/// Whether a link to the blob may be served, from its record as read (none: a blob this
/// table never counted).
pub(crate) fn servable(record: Option<&Item>) -> bool {
    record.is_none_or(
        |item| matches!(item.get(STATE), Some(AttributeValue::S(state)) if state == LIVE),
    )
}

impl DynamoMetadataStore {
    /// An update of a blob record: `expression` under `condition` (empty: none), with the
    /// values they use; the record's attribute names are bound as `#size`, `#refs`,
    /// `#touched` and `#state`.
    fn update(
        &self,
        item_key: Item,
        expression: &str,
        condition: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<Update> {
        let used =
            |placeholder: &str| expression.contains(placeholder) || condition.contains(placeholder);
        let mut builder = Update::builder()
            .table_name(&self.table)
            .set_key(Some(item_key))
            .update_expression(expression)
            .set_condition_expression((!condition.is_empty()).then(|| condition.to_owned()));
        for (placeholder, name) in [
            ("#size", SIZE),
            ("#refs", REFS),
            ("#touched", TOUCHED),
            ("#state", STATE),
            ("#pk", PARTITION_KEY),
        ] {
            if used(placeholder) {
                builder = builder.expression_attribute_names(placeholder, name);
            }
        }
        // DynamoDB refuses values the expressions do not use.
        for (placeholder, value) in values.into_iter().filter(|(name, _)| used(name)) {
            builder = builder.expression_attribute_values(placeholder, value);
        }
        builder.build().map_err(build_error)
    }

    /// The transaction items that add one reference to each of `blobs`, touching them at
    /// `now_ms`; each fails its condition when the blob is collecting or collected.
    pub(crate) fn reference_items(
        &self,
        blobs: &[Target],
        now_ms: u64,
    ) -> Result<Vec<TransactWriteItem>> {
        blobs
            .iter()
            .map(|blob| {
                let update = self.update(
                    record_key(blob.digest.as_str()),
                    "SET #size = if_not_exists(#size, :size), #touched = :now, #state = :live \
                     ADD #refs :one",
                    "attribute_not_exists(#state) OR #state = :live",
                    vec![
                        (":size", n(blob.size)),
                        (":now", n(now_ms)),
                        (":one", n(1)),
                        (":live", s(LIVE)),
                    ],
                )?;
                Ok(TransactWriteItem::builder().update(update).build())
            })
            .collect()
    }

    /// The update that adds `delta` bytes to the stored total.
    fn stored_change(&self, delta: i128) -> Result<Update> {
        Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(STORED_PK, META)))
            .update_expression("ADD #bytes :delta")
            .expression_attribute_names("#bytes", BYTES)
            .expression_attribute_values(":delta", AttributeValue::N(delta.to_string()))
            .build()
            .map_err(build_error)
    }

    /// Drops one reference of each of `blobs` and makes each a candidate, in transactions of
    /// [`TRANSACTION_ITEMS`].
    pub(crate) async fn drop_references(&self, blobs: &[Target]) -> Result<()> {
        let mut items = Vec::new();
        for blob in blobs {
            let update = self.update(
                record_key(blob.digest.as_str()),
                "ADD #refs :minus",
                "",
                vec![(":minus", AttributeValue::N("-1".to_owned()))],
            )?;
            items.push(TransactWriteItem::builder().update(update).build());
            let candidate = key(candidate_pk(blob.digest.as_str()), blob.digest.as_str());
            items.push(
                TransactWriteItem::builder()
                    .put(self.put(candidate, None)?)
                    .build(),
            );
        }
        for chunk in items.chunks(TRANSACTION_ITEMS) {
            self.transact(chunk.to_vec()).await?;
        }
        Ok(())
    }

    /// Counts the references of a table written before garbage collection: every linked
    /// blob gets a record counting the manifests that reference it, those without references
    /// become candidates, and the table is marked counted. Run it while no pushes or
    /// deletions run: a count taken meanwhile may miss them. Returns how many records it
    /// wrote.
    pub async fn count_blob_references(&self, now_ms: u64) -> Result<usize> {
        let mut counts: HashMap<String, (u64, u64)> = HashMap::new();
        let mut after: Option<String> = None;
        loop {
            let repositories = self.repositories(after.as_deref(), 100).await?;
            for name in &repositories {
                let repository: RepositoryName = name.parse()?;
                let links = Query::prefixed(&repository_pk(name), "BLOB#");
                for item in self.query_all(&links).await? {
                    let digest = string_attr(&item, SORT_KEY)?
                        .strip_prefix("BLOB#")
                        .ok_or_else(|| corrupt("a blob link's key"))?
                        .to_owned();
                    let size = number_attr(&item, SIZE)?;
                    counts.entry(digest).or_insert((size, 0));
                }
                for manifest in all_manifests(self, &repository).await? {
                    for blob in referenced_blobs(&manifest.media_type, &manifest.bytes) {
                        counts
                            .entry(blob.digest.to_string())
                            .or_insert((blob.size, 0))
                            .1 += 1;
                    }
                }
            }
            if repositories.len() < 100 {
                break;
            }
            after = repositories.last().cloned();
        }
        let mut requests = Vec::new();
        for (digest, (size, refs)) in &counts {
            let mut record = record_key(digest);
            record.insert(SIZE.to_owned(), n(*size));
            record.insert(REFS.to_owned(), n(*refs));
            record.insert(TOUCHED.to_owned(), n(now_ms));
            record.insert(STATE.to_owned(), s(LIVE));
            requests.push(put_request(record)?);
            if *refs == 0 {
                requests.push(put_request(key(candidate_pk(digest), digest.as_str()))?);
            }
        }
        let mut stored = key(STORED_PK, META);
        stored.insert(
            BYTES.to_owned(),
            n(counts.values().map(|(size, _)| size).sum()),
        );
        requests.push(put_request(stored)?);
        self.batch_write(requests).await?;
        self.mark_counted(now_ms).await?;
        Ok(counts.len())
    }

    /// Marks the table's references counted.
    pub(crate) async fn mark_counted(&self, now_ms: u64) -> Result<()> {
        let mut item = key(RUNS_PK, COUNTED_SK);
        item.insert("at".to_owned(), n(now_ms));
        self.put_item(self.put(item, None)?).await.map(drop)
    }

    /// Whether the table's references are counted (see the module documentation).
    pub async fn references_counted(&self) -> Result<bool> {
        Ok(self.get(key(RUNS_PK, COUNTED_SK), None).await?.is_some())
    }

    /// Candidates of one shard after `after`, at most `limit`.
    async fn shard_candidates(
        &self,
        shard: char,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Digest>> {
        let pk = format!("GCQ#{shard}");
        // Digests start with their algorithm: every one sorts between "a" and "~".
        let low = after.map_or("a", key_bound);
        let query = Query::between(&pk, low, "~").keys_only();
        self.list_entries(&query, after, limit, |item| {
            let digest = string_attr(item, SORT_KEY)?;
            let parsed: Digest = digest.parse().map_err(|_| corrupt("a candidate"))?;
            Ok(Some((digest.to_owned(), parsed)))
        })
        .await
    }
}

pub(crate) fn put_request(item: Item) -> Result<WriteRequest> {
    Ok(WriteRequest::builder()
        .put_request(
            PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map_err(build_error)?,
        )
        .build())
}

#[async_trait]
impl GarbageIndex for DynamoMetadataStore {
    async fn claim_blob(&self, digest: &Digest, size: u64, now_ms: u64) -> Result<Claim> {
        let key_text = digest.as_str();
        self.put_item(self.put(key(candidate_pk(key_text), key_text), None)?)
            .await?;
        let values = || {
            vec![
                (":size", n(size)),
                (":now", n(now_ms)),
                (":live", s(LIVE)),
                (":zero", n(0)),
                (":collecting", s(COLLECTING)),
                (":collected", s(COLLECTED)),
            ]
        };
        const CLAIM: &str = "SET #size = :size, #touched = :now, #state = :live, #refs = if_not_exists(#refs, :zero)";
        // A blob new here (or collected before) is claimed with its bytes counted, in one
        // transaction; one that is live already is only touched.
        let becomes_live = self.update(
            record_key(key_text),
            CLAIM,
            "attribute_not_exists(#state) OR #state = :collected",
            values(),
        )?;
        let counted = self.stored_change(i128::from(size))?;
        let items = vec![
            TransactWriteItem::builder().update(becomes_live).build(),
            TransactWriteItem::builder().update(counted).build(),
        ];
        if self.transact_checked(items).await?.is_ok() {
            return Ok(Claim::Claimed);
        }
        let touch = self.update(record_key(key_text), CLAIM, "#state = :live", values())?;
        Ok(match self.update_item(touch).await? {
            Some(_) => Claim::Claimed,
            None => match self.blob_record(digest).await? {
                Some(record) if record.state == BlobState::Collecting => Claim::Collecting,
                // Collected or removed in between: claim it as new.
                _ => return Box::pin(self.claim_blob(digest, size, now_ms)).await,
            },
        })
    }

    async fn blob_record(&self, digest: &Digest) -> Result<Option<BlobRecord>> {
        self.get(record_key(digest.as_str()), None)
            .await?
            .map(|item| record_of(digest, &item))
            .transpose()
    }

    async fn blob_records(&self, digests: &[Digest]) -> Result<Vec<Option<BlobRecord>>> {
        let keys: Vec<Item> = digests
            .iter()
            .map(Digest::as_str)
            .collect::<std::collections::HashSet<_>>()
            .into_iter()
            .map(record_key)
            .collect();
        let mut found = HashMap::new();
        for item in self.batch_get_items(keys).await? {
            found.insert(string_attr(&item, PARTITION_KEY)?.to_owned(), item);
        }
        digests
            .iter()
            .map(|digest| {
                found
                    .get(&blob_pk(digest.as_str()))
                    .map(|item| record_of(digest, item))
                    .transpose()
            })
            .collect()
    }

    async fn candidates(&self, after: Option<&str>, limit: usize) -> Result<Vec<Digest>> {
        let first = after
            .and_then(|after| candidate_pk(after).chars().last())
            .unwrap_or('0');
        let mut found = Vec::new();
        for shard in HEX.chars().filter(|shard| *shard >= first) {
            let from = if shard == first { after } else { None };
            found.extend(
                self.shard_candidates(shard, from, limit - found.len())
                    .await?,
            );
            if found.len() == limit {
                break;
            }
        }
        Ok(found)
    }

    async fn drop_candidates(&self, digests: &[Digest]) -> Result<()> {
        let item = |digest: &Digest| -> Result<[TransactWriteItem; 2]> {
            let check = ConditionCheck::builder()
                .table_name(&self.table)
                .set_key(Some(record_key(digest.as_str())))
                .condition_expression(
                    "attribute_not_exists(#pk) OR (#refs > :zero AND #state = :live)",
                )
                .expression_attribute_names("#pk", PARTITION_KEY)
                .expression_attribute_names("#refs", REFS)
                .expression_attribute_names("#state", STATE)
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":live", s(LIVE))
                .build()
                .map_err(build_error)?;
            let delete: Delete =
                self.delete(key(candidate_pk(digest.as_str()), digest.as_str()), None)?;
            Ok([
                TransactWriteItem::builder().condition_check(check).build(),
                TransactWriteItem::builder().delete(delete).build(),
            ])
        };
        for chunk in digests.chunks(DROPS_PER_TRANSACTION) {
            let mut items = Vec::new();
            for digest in chunk {
                items.extend(item(digest)?);
            }
            if self.transact_checked(items).await?.is_err() {
                // One became unreferenced meanwhile: drop the others one by one.
                for digest in chunk {
                    self.transact(item(digest)?.to_vec()).await?;
                }
            }
        }
        Ok(())
    }

    async fn begin_collect(&self, digests: &[Digest], cutoff_ms: u64) -> Result<Vec<BlobRecord>> {
        // One conditional update each: a failed condition in a transaction would cancel the
        // others.
        let mut marked = Vec::new();
        for digest in digests {
            let update = self.update(
                record_key(digest.as_str()),
                "SET #state = :collecting",
                "#state = :collecting OR (#state = :live AND #refs = :zero AND #touched < :cutoff)",
                vec![
                    (":collecting", s(COLLECTING)),
                    (":live", s(LIVE)),
                    (":zero", n(0)),
                    (":cutoff", n(cutoff_ms)),
                ],
            )?;
            if let Some(item) = self.update_item(update).await? {
                marked.push(record_of(digest, &item)?);
            }
        }
        Ok(marked)
    }

    async fn end_collect(&self, marked: &[BlobRecord], now_ms: u64) -> Result<()> {
        // Each record with its size off the total, in one transaction: counted exactly once.
        for record in marked {
            let update = self.update(
                record_key(record.digest.as_str()),
                "SET #state = :collected, #touched = :now",
                "#state = :collecting",
                vec![
                    (":collecting", s(COLLECTING)),
                    (":collected", s(COLLECTED)),
                    (":now", n(now_ms)),
                ],
            )?;
            let uncounted = self.stored_change(-i128::from(record.size))?;
            self.transact(vec![
                TransactWriteItem::builder().update(update).build(),
                TransactWriteItem::builder().update(uncounted).build(),
            ])
            .await?;
        }
        Ok(())
    }

    async fn stored_bytes(&self) -> Result<u64> {
        let Some(item) = self.get(key(STORED_PK, META), None).await? else {
            return Ok(0);
        };
        Ok(match item.get(BYTES) {
            Some(AttributeValue::N(text)) => text
                .parse::<i64>()
                .map_err(|_| corrupt("the stored bytes"))
                .map(|bytes| u64::try_from(bytes).unwrap_or(0))?,
            _ => 0,
        })
    }

    async fn forget_collected(&self, digest: &Digest, before_ms: u64) -> Result<()> {
        let record = self.delete(
            record_key(digest.as_str()),
            Some(Condition::new(
                "#state = :collected AND #touched < :before",
                &[("#state", STATE), ("#touched", TOUCHED)],
                vec![(":collected", s(COLLECTED)), (":before", n(before_ms))],
            )),
        )?;
        let candidate = self.delete(key(candidate_pk(digest.as_str()), digest.as_str()), None)?;
        self.transact(vec![
            TransactWriteItem::builder().delete(record).build(),
            TransactWriteItem::builder().delete(candidate).build(),
        ])
        .await
        .map(drop)
    }

    async fn references_counted(&self) -> Result<bool> {
        DynamoMetadataStore::references_counted(self).await
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| RegistryError::internal(format!("encoding a garbage collection record: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(item: &Item) -> Result<T> {
    serde_json::from_str(string_attr(item, RECORD)?)
        .map_err(|_| corrupt("a garbage collection record"))
}

#[async_trait]
impl GcHistory for DynamoMetadataStore {
    async fn create_run(&self, scheduled: bool, progress: &GcProgress, now_ms: u64) -> Result<u64> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(RUNS_PK, COUNTER_SK)))
            .update_expression("ADD #last :one")
            .expression_attribute_names("#last", LAST_ID)
            .expression_attribute_values(":one", n(1))
            .build()
            .map_err(build_error)?;
        let counter = self
            .update_item(update)
            .await?
            .ok_or_else(|| RegistryError::internal("the run counter was not updated"))?;
        let id = number_attr(&counter, LAST_ID)?;
        let run = GcRun {
            id,
            scheduled,
            status: GcStatus::Running,
            progress: progress.clone(),
            updated_ms: now_ms,
            error: None,
        };
        self.update_run(&run).await?;
        Ok(id)
    }

    async fn update_run(&self, run: &GcRun) -> Result<()> {
        let mut item = key(RUNS_PK, run_sk(run.id));
        item.insert(RECORD.to_owned(), s(encode(run)?));
        self.put_item(self.put(item, None)?).await.map(drop)
    }

    async fn run(&self, id: u64) -> Result<Option<GcRun>> {
        self.get(key(RUNS_PK, run_sk(id)), None)
            .await?
            .map(|item| decode(&item))
            .transpose()
    }

    async fn runs(&self, skip: usize, limit: usize) -> Result<(Vec<GcRun>, usize)> {
        let total = match self.get(key(RUNS_PK, COUNTER_SK), None).await? {
            Some(counter) => usize::try_from(number_attr(&counter, LAST_ID)?).unwrap_or(usize::MAX),
            None => 0,
        };
        let mut query = Query::prefixed(RUNS_PK, RUN_PREFIX);
        query.descending = true;
        let mut runs = Vec::new();
        let mut start = None;
        let mut seen = 0;
        while runs.len() < limit {
            let (page, next) = self.query_page(&query, start, None).await?;
            for item in &page {
                seen += 1;
                if seen > skip && runs.len() < limit {
                    runs.push(decode(item)?);
                }
            }
            match next {
                Some(next) => start = Some(next),
                None => break,
            }
        }
        Ok((runs, total))
    }

    async fn schedule(&self) -> Result<Option<GcSchedule>> {
        self.get(key(RUNS_PK, SCHEDULE_SK), None)
            .await?
            .map(|item| decode(&item))
            .transpose()
    }

    async fn set_schedule(&self, schedule: &GcSchedule) -> Result<()> {
        let mut item = key(RUNS_PK, SCHEDULE_SK);
        item.insert(RECORD.to_owned(), s(encode(schedule)?));
        self.put_item(self.put(item, None)?).await.map(drop)
    }
}

/// The error of a manifest put that references a blob garbage collection is deleting.
pub(crate) fn collected_blob(digest: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::ManifestBlobUnknown,
        format!(
            "the manifest references blob {digest}, which garbage collection deleted: push it \
             again"
        ),
    )
    .with_detail(serde_json::json!({ "digest": digest }))
}
