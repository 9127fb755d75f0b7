//! Garbage collection's records in the metadata database: the [`GarbageIndex`] (one record
//! per blob with its reference count, and the candidates) and the [`GcHistory`] (runs and the
//! schedule). The reference counts change in the write transactions of `put_manifest`,
//! `delete_manifest` and `delete_repository` (`metadata.rs` calls [`add_references`] and
//! [`drop_references`]).
//!
//! | table           | key        | value                                          |
//! |-----------------|------------|------------------------------------------------|
//! | `blob_records`  | digest     | (size, references, touched ms, state)          |
//! | `gc_candidates` | digest     | `()`                                           |
//! | `gc_runs`       | run id     | the run as JSON                                |
//! | `gc_schedule`   | `"gc"`     | the schedule as JSON                           |
//! | `stored_bytes`  | `"blobs"`  | the bytes of the live and collecting blobs     |
//!
//! A database of layout version 1 (before blob records) is given its records when opened
//! ([`migrate_to_records`]): each linked blob gets one, counting the manifests that
//! reference it, and those without references become candidates.

use async_trait::async_trait;
use berth_core::Digest;
use berth_core::error::{ErrorCode, RegistryError, Result};
use berth_core::gc::{
    BlobRecord, BlobState, Claim, GarbageIndex, GcHistory, GcProgress, GcRun, GcSchedule, GcStatus,
};
use berth_core::manifest::{Target, referenced_blobs};
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use crate::metadata::{RedbMetadataStore, corrupt};

/// A blob record: size, references, touched (Unix ms), state.
type RecordValue = (u64, u64, u64, u8);
pub(crate) const BLOB_RECORDS: TableDefinition<&str, RecordValue> =
    TableDefinition::new("blob_records");
const CANDIDATES: TableDefinition<&str, ()> = TableDefinition::new("gc_candidates");
const RUNS: TableDefinition<u64, &str> = TableDefinition::new("gc_runs");
const SCHEDULE: TableDefinition<&str, &str> = TableDefinition::new("gc_schedule");
const STORED: TableDefinition<&str, u64> = TableDefinition::new("stored_bytes");
const STORED_KEY: &str = "blobs";

const LIVE: u8 = 0;
const COLLECTING: u8 = 1;
const COLLECTED: u8 = 2;

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(BLOB_RECORDS)?;
    txn.open_table(CANDIDATES)?;
    txn.open_table(RUNS)?;
    txn.open_table(SCHEDULE)?;
    txn.open_table(STORED)?;
    Ok(())
}

/// Adds `delta` bytes to the stored total (taking off with a negative one).
fn add_stored(txn: &WriteTransaction, delta: i128) -> Result<(), redb::Error> {
    let mut stored = txn.open_table(STORED)?;
    let now = stored.get(STORED_KEY)?.map_or(0, |total| total.value());
    let next = (i128::from(now) + delta).clamp(0, i128::from(u64::MAX));
    stored.insert(STORED_KEY, u64::try_from(next).unwrap_or(0))?;
    Ok(())
}

fn state_of(code: u8) -> BlobState {
    match code {
        COLLECTING => BlobState::Collecting,
        COLLECTED => BlobState::Collected,
        _ => BlobState::Live,
    }
}

/// Whether a link to `digest` may be served: no record (a blob this database never counted)
/// or a live one.
pub(crate) fn servable(
    records: &impl ReadableTable<&'static str, RecordValue>,
    digest: &str,
) -> Result<bool, redb::Error> {
    Ok(records
        .get(digest)?
        .is_none_or(|record| record.value().3 == LIVE))
}

/// The references a new manifest adds, checked before anything is written: `Err(digest)`
/// names a blob that is collecting or collected.
pub(crate) fn check_references(
    txn: &WriteTransaction,
    blobs: &[Target],
) -> Result<Result<(), String>, redb::Error> {
    let records = txn.open_table(BLOB_RECORDS)?;
    for blob in blobs {
        if let Some(record) = records.get(blob.digest.as_str())?
            && record.value().3 != LIVE
        {
            return Ok(Err(blob.digest.to_string()));
        }
    }
    Ok(Ok(()))
}

/// Adds one reference to each distinct blob of a manifest new in its repository (checked
/// with [`check_references`] first), touching each at `now_ms`.
pub(crate) fn add_references(
    txn: &WriteTransaction,
    blobs: &[Target],
    now_ms: u64,
) -> Result<(), redb::Error> {
    let mut records = txn.open_table(BLOB_RECORDS)?;
    for blob in blobs {
        let key = blob.digest.as_str();
        let (size, refs, new) = match records.get(key)? {
            Some(record) => {
                let (size, refs, _, _) = record.value();
                (size, refs, false)
            }
            None => (blob.size, 0, true),
        };
        records.insert(key, (size, refs + 1, now_ms, LIVE))?;
        if new {
            add_stored(txn, i128::from(size))?;
        }
    }
    Ok(())
}

/// Drops the references of a removed manifest; a blob left with none becomes a candidate.
pub(crate) fn drop_references(
    txn: &WriteTransaction,
    media_type: &str,
    bytes: &[u8],
) -> Result<(), redb::Error> {
    let mut records = txn.open_table(BLOB_RECORDS)?;
    let mut candidates = txn.open_table(CANDIDATES)?;
    for blob in referenced_blobs(media_type, bytes) {
        let key = blob.digest.as_str();
        let Some((size, refs, touched, state)) = records.get(key)?.map(|r| r.value()) else {
            continue;
        };
        let refs = refs.saturating_sub(1);
        records.insert(key, (size, refs, touched, state))?;
        if refs == 0 {
            candidates.insert(key, ())?;
        }
    }
    Ok(())
}

/// Gives a database of layout version 1 its blob records: a record per linked blob (and per
/// blob a manifest references), with the number of manifests referencing it; those without
/// references are candidates, touched `now_ms` so that the grace window applies to them.
pub(crate) fn migrate_to_records(
    txn: &WriteTransaction,
    links: &[(String, u64)],
    manifests: &[(String, Vec<u8>)],
    now_ms: u64,
) -> Result<(), redb::Error> {
    let mut records = txn.open_table(BLOB_RECORDS)?;
    for (digest, size) in links {
        records.insert(digest.as_str(), (*size, 0, now_ms, LIVE))?;
    }
    for (media_type, bytes) in manifests {
        for blob in referenced_blobs(media_type, bytes) {
            let key = blob.digest.as_str();
            let (size, refs) = records
                .get(key)?
                .map_or((blob.size, 0), |r| (r.value().0, r.value().1));
            records.insert(key, (size, refs + 1, now_ms, LIVE))?;
        }
    }
    let unreferenced: Vec<String> = records
        .iter()?
        .filter_map(|row| match row {
            Ok((key, value)) if value.value().1 == 0 => Some(Ok(key.value().to_owned())),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()?;
    let mut candidates = txn.open_table(CANDIDATES)?;
    for digest in unreferenced {
        candidates.insert(digest.as_str(), ())?;
    }
    let total: u64 = records
        .iter()?
        .map(|row| Ok::<_, redb::Error>(row?.1.value().0))
        .sum::<Result<u64, _>>()?;
    txn.open_table(STORED)?.insert(STORED_KEY, total)?;
    Ok(())
}

fn record_of(digest: &Digest, value: RecordValue) -> BlobRecord {
    let (size, refs, touched_ms, state) = value;
    BlobRecord {
        digest: digest.clone(),
        size,
        refs,
        touched_ms,
        state: state_of(state),
    }
}

#[async_trait]
impl GarbageIndex for RedbMetadataStore {
    /// Always: a database is given its records when it is opened.
    async fn references_counted(&self) -> Result<bool> {
        Ok(true)
    }

    async fn claim_blob(&self, digest: &Digest, size: u64, now_ms: u64) -> Result<Claim> {
        let digest = digest.to_string();
        self.write(move |txn| {
            let mut records = txn.open_table(BLOB_RECORDS)?;
            let refs = match records.get(digest.as_str())?.map(|r| r.value()) {
                Some((_, _, _, COLLECTING)) => return Ok(Claim::Collecting),
                Some((_, refs, _, LIVE)) => Some(refs),
                // Collected (its bytes are gone) or unknown: live from now, unreferenced.
                _ => None,
            };
            records.insert(digest.as_str(), (size, refs.unwrap_or(0), now_ms, LIVE))?;
            if refs.is_none() {
                drop(records);
                add_stored(txn, i128::from(size))?;
            }
            txn.open_table(CANDIDATES)?.insert(digest.as_str(), ())?;
            Ok(Claim::Claimed)
        })
        .await
    }

    async fn blob_record(&self, digest: &Digest) -> Result<Option<BlobRecord>> {
        let value = self.read(|txn| {
            Ok(txn
                .open_table(BLOB_RECORDS)?
                .get(digest.as_str())?
                .map(|r| r.value()))
        })?;
        Ok(value.map(|value| record_of(digest, value)))
    }

    async fn blob_records(&self, digests: &[Digest]) -> Result<Vec<Option<BlobRecord>>> {
        let values = self.read(|txn| {
            let records = txn.open_table(BLOB_RECORDS)?;
            digests
                .iter()
                .map(|digest| Ok(records.get(digest.as_str())?.map(|r| r.value())))
                .collect::<Result<Vec<_>, redb::Error>>()
        })?;
        Ok(digests
            .iter()
            .zip(values)
            .map(|(digest, value)| value.map(|value| record_of(digest, value)))
            .collect())
    }

    async fn candidates(&self, after: Option<&str>, limit: usize) -> Result<Vec<Digest>> {
        let keys: Vec<String> = self.read(|txn| {
            let candidates = txn.open_table(CANDIDATES)?;
            let range = match after {
                Some(after) => candidates.range::<&str>((
                    std::ops::Bound::Excluded(after),
                    std::ops::Bound::Unbounded,
                ))?,
                None => candidates.range::<&str>(..)?,
            };
            range
                .take(limit)
                .map(|row| Ok(row?.0.value().to_owned()))
                .collect()
        })?;
        keys.iter()
            .map(|key| key.parse().map_err(|_| corrupt("a candidate's digest")))
            .collect()
    }

    async fn drop_candidates(&self, digests: &[Digest]) -> Result<()> {
        let digests: Vec<String> = digests.iter().map(ToString::to_string).collect();
        self.write(move |txn| {
            let records = txn.open_table(BLOB_RECORDS)?;
            let mut candidates = txn.open_table(CANDIDATES)?;
            for digest in &digests {
                // Only while it is still referenced (a deletion since may have made it one
                // again) or unknown.
                let keep = records.get(digest.as_str())?.is_some_and(|r| {
                    let (_, refs, _, state) = r.value();
                    refs == 0 || state != LIVE
                });
                if !keep {
                    candidates.remove(digest.as_str())?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn begin_collect(&self, digests: &[Digest], cutoff_ms: u64) -> Result<Vec<BlobRecord>> {
        let keys: Vec<String> = digests.iter().map(ToString::to_string).collect();
        let marked = self
            .write(move |txn| {
                let mut records = txn.open_table(BLOB_RECORDS)?;
                let mut marked = Vec::new();
                for (index, key) in keys.iter().enumerate() {
                    let Some((size, refs, touched, state)) =
                        records.get(key.as_str())?.map(|r| r.value())
                    else {
                        continue;
                    };
                    let eligible =
                        state == COLLECTING || (state == LIVE && refs == 0 && touched < cutoff_ms);
                    if eligible {
                        let value = (size, refs, touched, COLLECTING);
                        records.insert(key.as_str(), value)?;
                        marked.push((index, value));
                    }
                }
                Ok(marked)
            })
            .await?;
        Ok(marked
            .into_iter()
            .map(|(index, value)| record_of(&digests[index], value))
            .collect())
    }

    async fn end_collect(&self, marked: &[BlobRecord], now_ms: u64) -> Result<()> {
        let keys: Vec<String> = marked.iter().map(|r| r.digest.to_string()).collect();
        self.write(move |txn| {
            let mut freed = 0;
            {
                let mut records = txn.open_table(BLOB_RECORDS)?;
                for key in &keys {
                    let Some((size, refs, _, COLLECTING)) =
                        records.get(key.as_str())?.map(|r| r.value())
                    else {
                        continue;
                    };
                    records.insert(key.as_str(), (size, refs, now_ms, COLLECTED))?;
                    freed += i128::from(size);
                }
            }
            add_stored(txn, -freed)
        })
        .await
    }

    async fn stored_bytes(&self) -> Result<u64> {
        self.read(|txn| {
            Ok(txn
                .open_table(STORED)?
                .get(STORED_KEY)?
                .map_or(0, |total| total.value()))
        })
    }

    async fn forget_collected(&self, digest: &Digest, before_ms: u64) -> Result<()> {
        let digest = digest.to_string();
        self.write(move |txn| {
            let mut records = txn.open_table(BLOB_RECORDS)?;
            let forget = records
                .get(digest.as_str())?
                .is_some_and(|r| r.value().3 == COLLECTED && r.value().2 < before_ms);
            if forget {
                records.remove(digest.as_str())?;
                txn.open_table(CANDIDATES)?.remove(digest.as_str())?;
            }
            Ok(())
        })
        .await
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| RegistryError::internal(format!("encoding a garbage collection record: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|_| corrupt("a garbage collection record"))
}

#[async_trait]
impl GcHistory for RedbMetadataStore {
    async fn create_run(&self, scheduled: bool, progress: &GcProgress, now_ms: u64) -> Result<u64> {
        let progress = progress.clone();
        self.write(move |txn| {
            let mut runs = txn.open_table(RUNS)?;
            let id = runs.last()?.map_or(0, |(key, _)| key.value()) + 1;
            let run = GcRun {
                id,
                scheduled,
                status: GcStatus::Running,
                progress,
                updated_ms: now_ms,
                error: None,
            };
            let json = serde_json::to_string(&run)
                .map_err(|e| redb::Error::Corrupted(format!("encoding a run: {e}")))?;
            runs.insert(id, json.as_str())?;
            Ok(id)
        })
        .await
    }

    async fn update_run(&self, run: &GcRun) -> Result<()> {
        let (id, json) = (run.id, encode(run)?);
        self.write(move |txn| {
            txn.open_table(RUNS)?.insert(id, json.as_str())?;
            Ok(())
        })
        .await
    }

    async fn run(&self, id: u64) -> Result<Option<GcRun>> {
        let json = self.read(|txn| {
            Ok(txn
                .open_table(RUNS)?
                .get(id)?
                .map(|json| json.value().to_owned()))
        })?;
        json.as_deref().map(decode).transpose()
    }

    async fn runs(&self, skip: usize, limit: usize) -> Result<(Vec<GcRun>, usize)> {
        let (rows, total) = self.read(|txn| {
            let runs = txn.open_table(RUNS)?;
            let total = usize::try_from(runs.len()?).unwrap_or(usize::MAX);
            let rows: Vec<String> = runs
                .iter()?
                .rev()
                .skip(skip)
                .take(limit)
                .map(|row| Ok(row?.1.value().to_owned()))
                .collect::<Result<_, redb::Error>>()?;
            Ok((rows, total))
        })?;
        let runs = rows
            .iter()
            .map(|json| decode(json))
            .collect::<Result<_>>()?;
        Ok((runs, total))
    }

    async fn schedule(&self) -> Result<Option<GcSchedule>> {
        let json = self.read(|txn| {
            Ok(txn
                .open_table(SCHEDULE)?
                .get("gc")?
                .map(|json| json.value().to_owned()))
        })?;
        json.as_deref().map(decode).transpose()
    }

    async fn set_schedule(&self, schedule: &GcSchedule) -> Result<()> {
        let json = encode(schedule)?;
        self.write(move |txn| {
            txn.open_table(SCHEDULE)?.insert("gc", json.as_str())?;
            Ok(())
        })
        .await
    }
}

/// The error of a manifest put that references a blob garbage collection is deleting.
pub(crate) fn collected_blob(digest: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::ManifestBlobUnknown,
        format!(
            "the manifest references blob {digest}, which garbage collection deleted: push it again"
        ),
    )
    .with_detail(serde_json::json!({ "digest": digest }))
}

#[cfg(test)]
mod tests {
    use berth_core::ports::{ManifestRecord, MetadataStore};
    use berth_core::{Algorithm, RepositoryName};
    use bytes::Bytes;

    use super::*;

    fn image(config: &Digest, layer: &Digest) -> ManifestRecord {
        let bytes = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":3}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":30}}]}}"#
        );
        ManifestRecord {
            digest: Digest::of(Algorithm::Sha256, bytes.as_bytes()),
            media_type: "application/vnd.oci.image.manifest.v1+json".to_owned(),
            bytes: Bytes::from(bytes),
            referrer: None,
        }
    }

    /// A database of layout version 1 (links and manifests, no blob records) gets records
    /// counting its manifests' references when opened, and its unreferenced blobs become
    /// candidates.
    #[tokio::test]
    async fn a_version_1_database_gets_its_blob_records() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("metadata.redb");
        let (config, layer, loose) = (
            Digest::of(Algorithm::Sha256, b"config"),
            Digest::of(Algorithm::Sha256, b"layer"),
            Digest::of(Algorithm::Sha256, b"loose"),
        );
        {
            let store = RedbMetadataStore::open(&path).expect("opening");
            for name in ["a/one", "a/two"] {
                let repository: RepositoryName = name.parse().expect("a name");
                for (digest, size) in [(&config, 3), (&layer, 30), (&loose, 7)] {
                    store
                        .link_blob(&repository, digest, size)
                        .await
                        .expect("link");
                }
                store
                    .put_manifest(&repository, &image(&config, &layer), None)
                    .await
                    .expect("put");
            }
            // Back to what a version 1 database holds.
            store
                .write(|txn| {
                    txn.delete_table(BLOB_RECORDS)?;
                    txn.delete_table(CANDIDATES)?;
                    txn.open_table(TableDefinition::<&str, u64>::new("schema"))?
                        .insert("version", 1)?;
                    Ok(())
                })
                .await
                .expect("rewinding the layout");
        }
        let store = RedbMetadataStore::open(&path).expect("opening a version 1 database");
        let refs = |digest: Digest| {
            let store = &store;
            async move {
                let record = store.blob_record(&digest).await.expect("read");
                record.map(|r| (r.size, r.refs, r.state))
            }
        };
        assert_eq!(refs(config.clone()).await, Some((3, 2, BlobState::Live)));
        assert_eq!(refs(layer.clone()).await, Some((30, 2, BlobState::Live)));
        assert_eq!(refs(loose.clone()).await, Some((7, 0, BlobState::Live)));
        assert_eq!(
            store.candidates(None, 10).await.expect("candidates"),
            [loose],
            "only the unreferenced blob"
        );
        assert_eq!(
            store.stored_bytes().await.expect("stored bytes"),
            3 + 30 + 7
        );
    }
}
