//! [`RedbMetadataStore`]: registry metadata in one embedded redb database file.
//!
//! The tables hold the items of the DynamoDB single-table design (DESIGN.md), one table per
//! item kind, so both stores behave alike. A key is a redb tuple whose first element is the
//! DynamoDB partition (the repository); the table name stands for the sort key's prefix.
//!
//! | table          | key                               | value                              | DynamoDB item (PK / SK)                       |
//! |----------------|-----------------------------------|------------------------------------|-----------------------------------------------|
//! | `repositories` | name                              | `()`                               | `REPO#<name>` / `META`                        |
//! | `manifests`    | (repository, digest)              | (media type, subject, raw bytes)   | `REPO#<name>` / `MANIFEST#<digest>`           |
//! | `tags`         | (repository, tag)                 | digest                             | `REPO#<name>` / `TAG#<tag>`                   |
//! | `referrers`    | (repository, subject, digest)     | referrer descriptor (JSON)         | `REPO#<name>` / `REFERRER#<subject>#<digest>` |
//! | `blob_links`   | (repository, digest)              | size                               | `REPO#<name>` / `BLOB#<digest>`               |
//! | `uploads`      | upload id                         | (staged size, session JSON)        | `UPLOAD#<id>` / `META`                        |
//! | `schema`       | `"version"`                       | layout version                     | (none)                                        |
//!
//! The account tables (users, projects, members, robots, login failures) are described in
//! `accounts.rs`; they are created on open like these, so databases of earlier releases gain
//! them without a layout version change.
//!
//! Keys are tuples, not joined strings: redb compares tuples element by element, so one
//! repository's items form one range, bounded exactly (see [`successor`]) whatever characters
//! names and tags contain, and within it items sort by the plain bytes of the tag or digest,
//! the order listings promise. A joined key is only as safe as its separator: `/`, `-`, `.`
//! and `_` occur in repository names, so a scan of `a/` + tag would also sweep up the items
//! of repository `a/b`.
//!
//! A manifest row keeps the bytes exactly as received plus the digest of its subject; the
//! descriptor a referrers listing returns lives only in `referrers`, and a manifest read
//! joins the two in the same read transaction. Mutations that must agree happen in one
//! write transaction; writes fsync on commit, so they run on the blocking pool. Reads are
//! short lookups or range scans of an MVCC snapshot and run inline.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use crate::{garbage, quota};
use async_trait::async_trait;
use berth_core::error::{RegistryError, Result};
use berth_core::manifest::{ReferrerDescriptor, referenced_blobs};
use berth_core::ports::{ManifestRecord, MetadataStore, UploadSession};
use berth_core::{Digest, RepositoryName, Tag, UploadId};
use bytes::Bytes;
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};

const SCHEMA: TableDefinition<&str, u64> = TableDefinition::new("schema");
const REPOSITORIES: TableDefinition<&str, ()> = TableDefinition::new("repositories");
/// A manifest row: media type, subject digest (for referrers) and the bytes as received.
type ManifestValue = (&'static str, Option<&'static str>, &'static [u8]);
const MANIFESTS: TableDefinition<(&str, &str), ManifestValue> = TableDefinition::new("manifests");
const TAGS: TableDefinition<(&str, &str), &str> = TableDefinition::new("tags");
const REFERRERS: TableDefinition<(&str, &str, &str), &str> = TableDefinition::new("referrers");
const BLOB_LINKS: TableDefinition<(&str, &str), u64> = TableDefinition::new("blob_links");
const UPLOADS: TableDefinition<&str, (u64, &str)> = TableDefinition::new("uploads");

/// The layout version this code reads and writes; bump it with a migration. Version 2 added
/// the blob records of garbage collection (`garbage.rs`); version 3 the project quota charges
/// (`quota.rs`).
const SCHEMA_VERSION: u64 = 3;

/// Registry metadata in a redb database file.
pub struct RedbMetadataStore {
    db: Arc<Database>,
}

impl std::fmt::Debug for RedbMetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbMetadataStore").finish_non_exhaustive()
    }
}

impl RedbMetadataStore {
    /// Opens the database file at `path`, creating it (and its tables) if it does not exist.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => RegistryError::internal(
                "metadata store: the database is already open, by another Berth process?",
            ),
            other => db_error(other),
        })?;
        let version = create_tables(&db).map_err(db_error)?;
        if version != SCHEMA_VERSION {
            return Err(RegistryError::internal(format!(
                "metadata store: the database has layout version {version}, this Berth \
                 reads version {SCHEMA_VERSION}"
            )));
        }
        Ok(Self { db: Arc::new(db) })
    }

    /// Whether `other` is a handle on this same database.
    pub(crate) fn shares_database(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.db, &other.db)
    }

    pub(crate) fn read<T>(
        &self,
        op: impl FnOnce(&ReadTransaction) -> Result<T, redb::Error>,
    ) -> Result<T> {
        let txn = self.db.begin_read().map_err(db_error)?;
        op(&txn).map_err(db_error)
    }

    /// Runs `op` in one write transaction on the blocking pool and commits it.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        op: impl FnOnce(&WriteTransaction) -> Result<T, redb::Error> + Send + 'static,
    ) -> Result<T> {
        let db = Arc::clone(&self.db);
        let outcome = tokio::task::spawn_blocking(move || {
            let txn = db.begin_write()?;
            let value = op(&txn)?;
            txn.commit()?;
            Ok::<_, redb::Error>(value)
        })
        .await
        .map_err(|e| {
            RegistryError::internal(format!("metadata store: a write task failed: {e}"))
        })?;
        outcome.map_err(db_error)
    }
}

/// Creates the tables of a new database, and those a database of an earlier release lacks
/// (new tables need no migration), and returns the database's layout version.
fn create_tables(db: &Database) -> Result<u64, redb::Error> {
    let txn = db.begin_write()?;
    let version = {
        let mut schema = txn.open_table(SCHEMA)?;
        let stored = schema.get("version")?.map(|v| v.value());
        match stored {
            Some(version) => version,
            None => {
                schema.insert("version", SCHEMA_VERSION)?;
                SCHEMA_VERSION
            }
        }
    };
    crate::garbage::create_tables(&txn)?;
    crate::quota::create_tables(&txn)?;
    let version = if version == 1 {
        migrate_to_blob_records(&txn)?;
        txn.open_table(SCHEMA)?.insert("version", 2)?;
        2
    } else {
        version
    };
    let version = if version == 2 {
        migrate_to_quota_charges(&txn)?;
        txn.open_table(SCHEMA)?.insert("version", 3)?;
        3
    } else {
        version
    };
    txn.open_table(REPOSITORIES)?;
    txn.open_table(MANIFESTS)?;
    txn.open_table(TAGS)?;
    txn.open_table(REFERRERS)?;
    txn.open_table(BLOB_LINKS)?;
    txn.open_table(UPLOADS)?;
    crate::accounts::create_tables(&txn)?;
    crate::audit::create_tables(&txn)?;
    crate::statistics::create_tables(&txn)?;
    crate::webhooks::create_tables(&txn)?;
    crate::retention::create_tables(&txn)?;
    txn.commit()?;
    Ok(version)
}

/// Layout version 1 to 2: every linked or referenced blob gets its record.
fn migrate_to_blob_records(txn: &WriteTransaction) -> Result<(), redb::Error> {
    let links: Vec<(String, u64)> = txn
        .open_table(BLOB_LINKS)?
        .iter()?
        .map(|row| {
            let (key, size) = row?;
            Ok((key.value().1.to_owned(), size.value()))
        })
        .collect::<Result<_, redb::Error>>()?;
    let manifests: Vec<(String, Vec<u8>)> = txn
        .open_table(MANIFESTS)?
        .iter()?
        .map(|row| {
            let (_, value) = row?;
            let (media_type, _, bytes) = value.value();
            Ok((media_type.to_owned(), bytes.to_vec()))
        })
        .collect::<Result<_, redb::Error>>()?;
    crate::garbage::migrate_to_records(txn, &links, &manifests, berth_core::gc::now_ms())
}

/// Layout version 2 to 3: every stored manifest charges its project's quota.
fn migrate_to_quota_charges(txn: &WriteTransaction) -> Result<(), redb::Error> {
    let manifests: Vec<(String, String, String, Vec<u8>)> = txn
        .open_table(MANIFESTS)?
        .iter()?
        .map(|row| {
            let (key, value) = row?;
            let (repository, digest) = key.value();
            let (media_type, _, bytes) = value.value();
            Ok((
                repository.to_owned(),
                digest.to_owned(),
                media_type.to_owned(),
                bytes.to_vec(),
            ))
        })
        .collect::<Result<_, redb::Error>>()?;
    crate::quota::migrate_to_charges(txn, &manifests)
}

/// The smallest string above `key`. Tuple elements compare as whole strings, so
/// `(successor(key), "")` is the first key past every `(key, _)`: it bounds a partition
/// exactly, and `(key, "")` (no tag or digest is empty) opens it.
pub(crate) fn successor(key: &str) -> String {
    format!("{key}\0")
}

/// A manifest row as stored, before it is decoded into a [`ManifestRecord`].
struct ManifestRow {
    media_type: String,
    bytes: Vec<u8>,
    /// The subject's digest and the referrer descriptor, for manifests that name one.
    referrer: Option<(String, String)>,
}

fn load_manifest(
    txn: &ReadTransaction,
    repo: &str,
    digest: &str,
) -> Result<Option<ManifestRow>, redb::Error> {
    let Some(row) = txn.open_table(MANIFESTS)?.get((repo, digest))? else {
        return Ok(None);
    };
    let (media_type, subject, bytes) = row.value();
    let referrer = match subject {
        None => None,
        Some(subject) => {
            let descriptor = txn.open_table(REFERRERS)?.get((repo, subject, digest))?;
            Some((
                subject.to_owned(),
                descriptor.map(|d| d.value().to_owned()).unwrap_or_default(),
            ))
        }
    };
    Ok(Some(ManifestRow {
        media_type: media_type.to_owned(),
        bytes: bytes.to_vec(),
        referrer,
    }))
}

fn decode_manifest(digest: Digest, row: ManifestRow) -> Result<ManifestRecord> {
    let referrer = row
        .referrer
        .map(|(subject, descriptor)| {
            let subject: Digest = subject
                .parse()
                .map_err(|_| corrupt("a manifest's subject"))?;
            let descriptor: ReferrerDescriptor =
                serde_json::from_str(&descriptor).map_err(|_| corrupt("a referrer descriptor"))?;
            Ok::<_, RegistryError>((subject, descriptor))
        })
        .transpose()?;
    Ok(ManifestRecord {
        digest,
        media_type: row.media_type,
        bytes: Bytes::from(row.bytes),
        referrer,
    })
}

#[async_trait]
impl MetadataStore for RedbMetadataStore {
    async fn manifest(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<ManifestRecord>> {
        let row = self.read(|txn| load_manifest(txn, repository.as_str(), digest.as_str()))?;
        row.map(|row| decode_manifest(digest.clone(), row))
            .transpose()
    }

    async fn tagged_manifest(
        &self,
        repository: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<ManifestRecord>> {
        let repo = repository.as_str();
        let found = self.read(|txn| {
            let Some(digest) = txn.open_table(TAGS)?.get((repo, tag.as_str()))? else {
                return Ok(None);
            };
            let digest = digest.value().to_owned();
            Ok(load_manifest(txn, repo, &digest)?.map(|row| (digest, row)))
        })?;
        found
            .map(|(digest, row)| {
                let digest = digest.parse().map_err(|_| corrupt("a tag's digest"))?;
                decode_manifest(digest, row)
            })
            .transpose()
    }

    async fn manifests_present(
        &self,
        repository: &RepositoryName,
        digests: &[Digest],
    ) -> Result<Vec<bool>> {
        self.read(|txn| {
            let manifests = txn.open_table(MANIFESTS)?;
            digests
                .iter()
                .map(|d| Ok(manifests.get((repository.as_str(), d.as_str()))?.is_some()))
                .collect()
        })
    }

    async fn put_manifest(
        &self,
        repository: &RepositoryName,
        manifest: &ManifestRecord,
        tag: Option<&Tag>,
    ) -> Result<()> {
        let (repo, digest) = (repository.to_string(), manifest.digest.to_string());
        let (media_type, bytes) = (manifest.media_type.clone(), manifest.bytes.clone());
        let tag = tag.map(Tag::to_string);
        let referrer = match &manifest.referrer {
            None => None,
            Some((subject, descriptor)) => {
                let json = serde_json::to_string(descriptor).map_err(RegistryError::internal)?;
                Some((subject.to_string(), json))
            }
        };
        let now_ms = berth_core::gc::now_ms();
        self.write(move |txn| {
            let subject = referrer.as_ref().map(|(subject, _)| subject.as_str());
            // A manifest new in this repository adds its references; one stored again does
            // not.
            let new = txn
                .open_table(MANIFESTS)?
                .get((repo.as_str(), digest.as_str()))?
                .is_none();
            if new {
                let blobs = referenced_blobs(&media_type, &bytes);
                if let Err(collected) = garbage::check_references(txn, &blobs)? {
                    return Ok(Err(garbage::collected_blob(&collected)));
                }
                // Checked, then written: a refused charge leaves nothing behind.
                let size = bytes.len() as u64;
                if let Err(exceeded) = quota::charge(txn, &repo, &digest, size, &blobs)? {
                    return Ok(Err(exceeded));
                }
                garbage::add_references(txn, &blobs, now_ms)?;
            }
            txn.open_table(REPOSITORIES)?.insert(repo.as_str(), ())?;
            txn.open_table(MANIFESTS)?.insert(
                (repo.as_str(), digest.as_str()),
                (media_type.as_str(), subject, &bytes[..]),
            )?;
            if let Some((subject, descriptor)) = &referrer {
                txn.open_table(REFERRERS)?.insert(
                    (repo.as_str(), subject.as_str(), digest.as_str()),
                    descriptor.as_str(),
                )?;
            }
            if let Some(tag) = &tag {
                txn.open_table(TAGS)?
                    .insert((repo.as_str(), tag.as_str()), digest.as_str())?;
            }
            Ok(Ok(()))
        })
        .await?
    }

    async fn delete_manifest(&self, repository: &RepositoryName, digest: &Digest) -> Result<bool> {
        let (repo, digest) = (repository.to_string(), digest.to_string());
        self.write(move |txn| {
            let (subject, media_type, bytes) = {
                let mut manifests = txn.open_table(MANIFESTS)?;
                let Some(removed) = manifests.remove((repo.as_str(), digest.as_str()))? else {
                    return Ok(false);
                };
                let (media_type, subject, bytes) = removed.value();
                (
                    subject.map(str::to_owned),
                    media_type.to_owned(),
                    bytes.to_vec(),
                )
            };
            garbage::drop_references(txn, &media_type, &bytes)?;
            quota::discharge(txn, &repo, &digest, &media_type, &bytes)?;
            if let Some(subject) = subject {
                txn.open_table(REFERRERS)?.remove((
                    repo.as_str(),
                    subject.as_str(),
                    digest.as_str(),
                ))?;
            }
            // Tags are keyed by name; finding those that point here means scanning the
            // repository's tags, as a DynamoDB query with a filter would.
            let end = successor(&repo);
            txn.open_table(TAGS)?.retain_in(
                (
                    Bound::Included((repo.as_str(), "")),
                    Bound::Excluded((end.as_str(), "")),
                ),
                |_, target| target != digest,
            )?;
            Ok(true)
        })
        .await
    }

    async fn delete_tag(&self, repository: &RepositoryName, tag: &Tag) -> Result<bool> {
        let (repo, tag) = (repository.to_string(), tag.to_string());
        self.write(move |txn| {
            Ok(txn
                .open_table(TAGS)?
                .remove((repo.as_str(), tag.as_str()))?
                .is_some())
        })
        .await
    }

    async fn tags(
        &self,
        repository: &RepositoryName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        let repo = repository.as_str();
        let end = successor(repo);
        let start = after.map_or(Bound::Included((repo, "")), |after| {
            Bound::Excluded((repo, after))
        });
        self.read(|txn| {
            let tags = txn.open_table(TAGS)?;
            let range = tags.range::<(&str, &str)>((start, Bound::Excluded((end.as_str(), ""))))?;
            range
                .take(limit)
                .map(|entry| Ok(entry?.0.value().1.to_owned()))
                .collect()
        })
    }

    async fn tag_targets(
        &self,
        repository: &RepositoryName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Digest)>> {
        let repo = repository.as_str();
        let end = successor(repo);
        let start = after.map_or(Bound::Included((repo, "")), |after| {
            Bound::Excluded((repo, after))
        });
        let rows: Vec<(String, String)> = self.read(|txn| {
            let tags = txn.open_table(TAGS)?;
            let range = tags.range::<(&str, &str)>((start, Bound::Excluded((end.as_str(), ""))))?;
            range
                .take(limit)
                .map(|entry| {
                    let (key, digest) = entry?;
                    Ok((key.value().1.to_owned(), digest.value().to_owned()))
                })
                .collect()
        })?;
        rows.into_iter()
            .map(|(tag, digest)| Ok((tag, digest.parse().map_err(|_| corrupt("a tag's digest"))?)))
            .collect()
    }

    async fn manifests_page(
        &self,
        repository: &RepositoryName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ManifestRecord>> {
        let repo = repository.as_str();
        let end = successor(repo);
        let start = after.map_or(Bound::Included((repo, "")), |after| {
            Bound::Excluded((repo, after))
        });
        let rows: Vec<(String, ManifestRow)> = self.read(|txn| {
            let digests: Vec<String> = {
                let manifests = txn.open_table(MANIFESTS)?;
                let range = manifests
                    .range::<(&str, &str)>((start, Bound::Excluded((end.as_str(), ""))))?;
                range
                    .take(limit)
                    .map(|entry| Ok(entry?.0.value().1.to_owned()))
                    .collect::<Result<_, redb::Error>>()?
            };
            let mut rows = Vec::with_capacity(digests.len());
            for digest in digests {
                if let Some(row) = load_manifest(txn, repo, &digest)? {
                    rows.push((digest, row));
                }
            }
            Ok(rows)
        })?;
        rows.into_iter()
            .map(|(digest, row)| {
                let digest = digest.parse().map_err(|_| corrupt("a manifest's digest"))?;
                decode_manifest(digest, row)
            })
            .collect()
    }

    async fn repositories(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.read(|txn| {
            let repositories = txn.open_table(REPOSITORIES)?;
            let range = repositories.range::<&str>((start, Bound::Unbounded))?;
            range
                .take(limit)
                .map(|entry| Ok(entry?.0.value().to_owned()))
                .collect()
        })
    }

    async fn repository_exists(&self, repository: &RepositoryName) -> Result<bool> {
        self.read(|txn| {
            Ok(txn
                .open_table(REPOSITORIES)?
                .get(repository.as_str())?
                .is_some())
        })
    }

    async fn delete_repository(&self, repository: &RepositoryName) -> Result<bool> {
        let repo = repository.to_string();
        self.write(move |txn| {
            let end = successor(&repo);
            let pairs = (
                Bound::Included((repo.as_str(), "")),
                Bound::Excluded((end.as_str(), "")),
            );
            txn.open_table(TAGS)?.retain_in(pairs, |_, _| false)?;
            let removed: Vec<(String, String, Vec<u8>)> = txn
                .open_table(MANIFESTS)?
                .range::<(&str, &str)>(pairs)?
                .map(|row| {
                    let (key, value) = row?;
                    let (media_type, _, bytes) = value.value();
                    Ok((
                        key.value().1.to_owned(),
                        media_type.to_owned(),
                        bytes.to_vec(),
                    ))
                })
                .collect::<Result<_, redb::Error>>()?;
            for (digest, media_type, bytes) in &removed {
                garbage::drop_references(txn, media_type, bytes)?;
                quota::discharge(txn, &repo, digest, media_type, bytes)?;
            }
            txn.open_table(MANIFESTS)?.retain_in(pairs, |_, _| false)?;
            txn.open_table(BLOB_LINKS)?.retain_in(pairs, |_, _| false)?;
            txn.open_table(REFERRERS)?.retain_in(
                (
                    Bound::Included((repo.as_str(), "", "")),
                    Bound::Excluded((end.as_str(), "", "")),
                ),
                |_, _| false,
            )?;
            let existed = txn
                .open_table(REPOSITORIES)?
                .remove(repo.as_str())?
                .is_some();
            Ok(existed)
        })
        .await
    }

    async fn referrers(
        &self,
        repository: &RepositoryName,
        subject: &Digest,
    ) -> Result<Vec<ReferrerDescriptor>> {
        let (repo, subject) = (repository.as_str(), subject.as_str());
        let end = successor(subject);
        let descriptors: Vec<String> = self.read(|txn| {
            let referrers = txn.open_table(REFERRERS)?;
            let range = referrers.range::<(&str, &str, &str)>((
                Bound::Included((repo, subject, "")),
                Bound::Excluded((repo, end.as_str(), "")),
            ))?;
            range.map(|entry| Ok(entry?.1.value().to_owned())).collect()
        })?;
        descriptors
            .iter()
            .map(|json| serde_json::from_str(json).map_err(|_| corrupt("a referrer descriptor")))
            .collect()
    }

    async fn link_blob(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        let (repo, digest) = (repository.to_string(), digest.to_string());
        self.write(move |txn| {
            txn.open_table(REPOSITORIES)?.insert(repo.as_str(), ())?;
            txn.open_table(BLOB_LINKS)?
                .insert((repo.as_str(), digest.as_str()), size)?;
            Ok(())
        })
        .await
    }

    async fn blob_links(
        &self,
        repository: &RepositoryName,
        digests: &[Digest],
    ) -> Result<Vec<Option<u64>>> {
        self.read(|txn| {
            let links = txn.open_table(BLOB_LINKS)?;
            let records = txn.open_table(garbage::BLOB_RECORDS)?;
            digests
                .iter()
                .map(|d| {
                    let Some(size) = links.get((repository.as_str(), d.as_str()))? else {
                        return Ok(None);
                    };
                    // A link to a blob garbage collection deleted (or is deleting) stays
                    // until its repository goes, unserved.
                    Ok(garbage::servable(&records, d.as_str())?.then(|| size.value()))
                })
                .collect()
        })
    }

    async fn unlink_blob(&self, repository: &RepositoryName, digest: &Digest) -> Result<bool> {
        let (repo, digest) = (repository.to_string(), digest.to_string());
        self.write(move |txn| {
            Ok(txn
                .open_table(BLOB_LINKS)?
                .remove((repo.as_str(), digest.as_str()))?
                .is_some())
        })
        .await
    }

    async fn create_upload(&self, session: &UploadSession) -> Result<()> {
        let (id, size, json) = encode_session(session)?;
        self.write(move |txn| {
            txn.open_table(UPLOADS)?
                .insert(id.as_str(), (size, json.as_str()))?;
            Ok(())
        })
        .await
    }

    async fn upload(&self, id: &UploadId) -> Result<Option<UploadSession>> {
        let json = self.read(|txn| {
            let uploads = txn.open_table(UPLOADS)?;
            Ok(uploads
                .get(id.as_str())?
                .map(|row| row.value().1.to_owned()))
        })?;
        json.map(|json| serde_json::from_str(&json).map_err(|_| corrupt("an upload session")))
            .transpose()
    }

    async fn update_upload(&self, session: &UploadSession, expected_size: u64) -> Result<bool> {
        let (id, size, json) = encode_session(session)?;
        self.write(move |txn| {
            let mut uploads = txn.open_table(UPLOADS)?;
            let stored_size = uploads.get(id.as_str())?.map(|row| row.value().0);
            if stored_size != Some(expected_size) {
                return Ok(false);
            }
            uploads.insert(id.as_str(), (size, json.as_str()))?;
            Ok(true)
        })
        .await
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<()> {
        let id = id.to_string();
        self.write(move |txn| {
            txn.open_table(UPLOADS)?.remove(id.as_str())?;
            Ok(())
        })
        .await
    }
}

/// A session's key, the size its conditional update compares, and its JSON.
fn encode_session(session: &UploadSession) -> Result<(String, u64, String)> {
    let json = serde_json::to_string(session).map_err(RegistryError::internal)?;
    Ok((session.staged.id.to_string(), session.staged.size, json))
}

/// A redb failure. redb's messages name no paths, and the cause is only ever logged.
/// The time now, in Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

pub(crate) fn db_error(e: impl Into<redb::Error>) -> RegistryError {
    RegistryError::internal(format!("metadata store: {}", e.into()))
}

pub(crate) fn corrupt(what: &str) -> RegistryError {
    RegistryError::internal(format!("metadata store: {what} is corrupt"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, RedbMetadataStore) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = RedbMetadataStore::open(dir.path().join("metadata.redb")).expect("opening");
        (dir, store)
    }

    fn repo(name: &str) -> RepositoryName {
        name.parse().expect("a repository name")
    }

    fn tag(name: &str) -> Tag {
        name.parse().expect("a tag")
    }

    fn record(text: &str) -> ManifestRecord {
        ManifestRecord {
            digest: Digest::of(berth_core::Algorithm::Sha256, text.as_bytes()),
            media_type: "application/vnd.oci.image.manifest.v1+json".to_owned(),
            bytes: Bytes::from(text.to_owned()),
            referrer: None,
        }
    }

    #[test]
    fn successor_bounds_exactly_one_partition() {
        let end = successor("a");
        for inside in [("a", ""), ("a", "\u{10ffff}"), ("a", "zzz")] {
            assert!(inside < (end.as_str(), ""), "{inside:?}");
        }
        for outside in ["a\0", "a-b", "a.b", "a/b", "a_b", "ab", "b"] {
            assert!((outside, "") >= (end.as_str(), ""), "{outside:?}");
        }
    }

    /// Names chosen so that any string-concatenation key with a separator among `-./_`
    /// would interleave them: every repository must see exactly its own tags.
    #[tokio::test]
    async fn neighbouring_repositories_never_share_tags() {
        let (_dir, store) = open();
        let names = ["a", "a-b", "a.b", "a/b", "a/b/c", "a_b", "ab", "b"];
        let tags = ["a", "a-b", "ab", "b", "z"];
        for name in names {
            for t in tags {
                let manifest = record(&format!("{name} {t}"));
                store
                    .put_manifest(&repo(name), &manifest, Some(&tag(t)))
                    .await
                    .expect("put");
            }
        }
        for name in names {
            assert_eq!(
                store.tags(&repo(name), None, 100).await.expect("tags"),
                tags,
                "{name}"
            );
            for limit in 1..=tags.len() {
                let mut listed = Vec::new();
                loop {
                    let after = listed.last().map(String::as_str);
                    let page = store.tags(&repo(name), after, limit).await.expect("tags");
                    let done = page.len() < limit;
                    listed.extend(page);
                    assert!(listed.len() <= tags.len(), "{name}: pagination never ends");
                    if done {
                        break;
                    }
                }
                assert_eq!(listed, tags, "{name}, {limit} at a time");
            }
            let first = record(&format!("{name} a"));
            assert!(
                store
                    .delete_manifest(&repo(name), &first.digest)
                    .await
                    .expect("delete")
            );
        }
        for name in names {
            assert_eq!(
                store.tags(&repo(name), None, 100).await.expect("tags"),
                &tags[1..],
                "{name}"
            );
        }
        let catalog = store.repositories(None, 100).await.expect("repositories");
        assert_eq!(
            catalog,
            ["a", "a-b", "a.b", "a/b", "a/b/c", "a_b", "ab", "b"]
        );
        assert_eq!(
            store.repositories(Some("a"), 2).await.expect("page"),
            ["a-b", "a.b"]
        );
        assert_eq!(
            store.repositories(Some("a/b"), 1).await.expect("page"),
            ["a/b/c"]
        );
    }

    #[tokio::test]
    async fn delete_manifest_keeps_tags_of_the_same_name_elsewhere() {
        let (_dir, store) = open();
        let shared = record("the same manifest in two repositories");
        for name in ["x", "x-y"] {
            store
                .put_manifest(&repo(name), &shared, Some(&tag("latest")))
                .await
                .expect("put");
        }
        assert!(
            store
                .delete_manifest(&repo("x"), &shared.digest)
                .await
                .expect("delete")
        );
        let kept = store
            .tagged_manifest(&repo("x-y"), &tag("latest"))
            .await
            .expect("read");
        assert_eq!(kept.as_ref(), Some(&shared));
    }

    #[tokio::test]
    async fn data_survives_reopening() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("metadata.redb");
        let manifest = record("durable");
        {
            let store = RedbMetadataStore::open(&path).expect("opening");
            store
                .put_manifest(&repo("r"), &manifest, Some(&tag("t")))
                .await
                .expect("put");
        }
        let store = RedbMetadataStore::open(&path).expect("reopening");
        let found = store
            .tagged_manifest(&repo("r"), &tag("t"))
            .await
            .expect("read");
        assert_eq!(found, Some(manifest));
    }

    #[test]
    fn a_database_of_another_layout_is_refused() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("metadata.redb");
        drop(RedbMetadataStore::open(&path).expect("creating"));
        {
            let db = Database::create(&path).expect("raw open");
            let txn = db.begin_write().expect("write");
            txn.open_table(SCHEMA)
                .expect("schema")
                .insert("version", 99)
                .expect("insert");
            txn.commit().expect("commit");
        }
        let err = RedbMetadataStore::open(&path).expect_err("a newer layout");
        assert!(err.to_string().contains("version 99"), "{err}");
    }

    #[test]
    fn errors_name_no_paths() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let err = RedbMetadataStore::open(dir.path()).expect_err("a directory is no database");
        let text = err.to_string();
        let path = dir.path().to_string_lossy();
        assert!(!text.contains(path.as_ref()), "{text}");
        assert_eq!(err.message(), "internal error");
    }
}
