//! Project storage quotas in the redb database (see `berth_core::quota`): the counts of what
//! each project's manifests name, changed in the manifest writes' own transactions.
//!
//! | table           | key                | value                  | DynamoDB item (PK / SK)          |
//! |-----------------|--------------------|------------------------|----------------------------------|
//! | `quota_limits`  | project            | bytes                  | `QUOTA#<project>` / `META`       |
//! | `quota_usage`   | project            | bytes                  | `QUOTA#<project>` / `META`       |
//! | `quota_charges` | (project, digest)  | (references, size)     | `QUOTA#<project>` / `REF#<digest>` |

use async_trait::async_trait;
use berth_core::Digest;
use berth_core::error::{RegistryError, Result};
use berth_core::manifest::{Target, referenced_blobs};
use berth_core::quota::{Quota, QuotaStore, charges, charges_of, quota_exceeded};
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::metadata::RedbMetadataStore;

const LIMITS: TableDefinition<&str, u64> = TableDefinition::new("quota_limits");
const USAGE: TableDefinition<&str, u64> = TableDefinition::new("quota_usage");
const CHARGES: TableDefinition<(&str, &str), (u64, u64)> = TableDefinition::new("quota_charges");

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(LIMITS)?;
    txn.open_table(USAGE)?;
    txn.open_table(CHARGES)?;
    Ok(())
}

fn project_of(repository: &str) -> &str {
    repository.split('/').next().unwrap_or(repository)
}

/// Adds the charges of a manifest new in `repository`, or refuses them (writing nothing)
/// when the digests new to the project would take it past its limit.
pub(crate) fn charge(
    txn: &WriteTransaction,
    repository: &str,
    digest: &str,
    size: u64,
    blobs: &[Target],
) -> Result<Result<(), RegistryError>, redb::Error> {
    let project = project_of(repository);
    let Ok(parsed) = digest.parse::<Digest>() else {
        return Ok(Ok(()));
    };
    let charged = charges_of(&parsed, size, blobs);
    let mut table = txn.open_table(CHARGES)?;
    let mut adding = 0;
    let mut counts = Vec::with_capacity(charged.len());
    for target in &charged {
        let refs = table
            .get((project, target.digest.as_str()))?
            .map_or(0, |row| row.value().0);
        if refs == 0 {
            adding += target.size;
        }
        counts.push(refs);
    }
    let quota = read_quota(txn, project)?;
    if !quota.fits(adding) {
        return Ok(Err(quota_exceeded(project, &quota, adding)));
    }
    for (target, refs) in charged.iter().zip(counts) {
        table.insert((project, target.digest.as_str()), (refs + 1, target.size))?;
    }
    txn.open_table(USAGE)?
        .insert(project, quota.used.saturating_add(adding))?;
    Ok(Ok(()))
}

/// Takes back the charges of a manifest removed from `repository`.
pub(crate) fn discharge(
    txn: &WriteTransaction,
    repository: &str,
    digest: &str,
    media_type: &str,
    bytes: &[u8],
) -> Result<(), redb::Error> {
    let Ok(parsed) = digest.parse::<Digest>() else {
        return Ok(());
    };
    discharge_targets(
        txn,
        project_of(repository),
        &charges(&parsed, media_type, bytes),
    )
}

fn discharge_targets(
    txn: &WriteTransaction,
    project: &str,
    charged: &[Target],
) -> Result<(), redb::Error> {
    let mut table = txn.open_table(CHARGES)?;
    let mut freed = 0;
    for target in charged {
        let key = (project, target.digest.as_str());
        let Some((refs, size)) = table.get(key)?.map(|row| row.value()) else {
            continue;
        };
        if refs <= 1 {
            table.remove(key)?;
            freed += size;
        } else {
            table.insert(key, (refs - 1, size))?;
        }
    }
    if freed > 0 {
        let mut usage = txn.open_table(USAGE)?;
        let used = usage.get(project)?.map_or(0, |v| v.value());
        usage.insert(project, used.saturating_sub(freed))?;
    }
    Ok(())
}

fn read_quota(txn: &WriteTransaction, project: &str) -> Result<Quota, redb::Error> {
    quota_in(&txn.open_table(LIMITS)?, &txn.open_table(USAGE)?, project)
}

fn quota_in(
    limits: &impl ReadableTable<&'static str, u64>,
    usage: &impl ReadableTable<&'static str, u64>,
    project: &str,
) -> Result<Quota, redb::Error> {
    Ok(Quota {
        limit: limits.get(project)?.map(|v| v.value()),
        used: usage.get(project)?.map_or(0, |v| v.value()),
    })
}

/// Layout version 2 to 3: every stored manifest charges its project.
pub(crate) fn migrate_to_charges(
    txn: &WriteTransaction,
    manifests: &[(String, String, String, Vec<u8>)],
) -> Result<(), redb::Error> {
    for (repository, digest, media_type, bytes) in manifests {
        // No project has a limit before this layout: a charge is never refused here.
        let blobs = referenced_blobs(media_type, bytes);
        let _ = charge(txn, repository, digest, bytes.len() as u64, &blobs)?;
    }
    Ok(())
}

#[async_trait]
impl QuotaStore for RedbMetadataStore {
    async fn quota(&self, project: &str) -> Result<Quota> {
        self.read(|txn| quota_in(&txn.open_table(LIMITS)?, &txn.open_table(USAGE)?, project))
    }

    async fn set_limit(&self, project: &str, limit: Option<u64>) -> Result<()> {
        let project = project.to_owned();
        self.write(move |txn| {
            let mut limits = txn.open_table(LIMITS)?;
            match limit {
                Some(bytes) => limits.insert(project.as_str(), bytes)?,
                None => limits.remove(project.as_str())?,
            };
            Ok(())
        })
        .await
    }

    async fn counted(&self, project: &str, digests: &[Digest]) -> Result<Vec<bool>> {
        self.read(|txn| {
            let table = txn.open_table(CHARGES)?;
            digests
                .iter()
                .map(|d| Ok(table.get((project, d.as_str()))?.is_some()))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use berth_core::ports::{ManifestRecord, MetadataStore};
    use berth_core::{Algorithm, RepositoryName};
    use bytes::Bytes;

    use super::*;

    fn manifest(text: &str) -> ManifestRecord {
        ManifestRecord {
            digest: Digest::of(Algorithm::Sha256, text.as_bytes()),
            media_type: "application/vnd.oci.image.manifest.v1+json".to_owned(),
            bytes: Bytes::from(text.to_owned()),
            referrer: None,
        }
    }

    #[tokio::test]
    async fn a_version_2_database_gets_its_usage_counted() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("metadata.redb");
        let (shared, own) = (manifest(r#"{"shared":1}"#), manifest(r#"{"own":22}"#));
        {
            let store = RedbMetadataStore::open(&path).expect("opening");
            for (name, record) in [("a/one", &shared), ("a/two", &shared), ("a/two", &own)] {
                let repository: RepositoryName = name.parse().expect("a name");
                store
                    .put_manifest(&repository, record, None)
                    .await
                    .expect("put");
            }
            store.set_limit("a", Some(100)).await.expect("limit");
            // Back to what a version 2 database holds.
            store
                .write(|txn| {
                    txn.delete_table(USAGE)?;
                    txn.delete_table(CHARGES)?;
                    txn.delete_table(LIMITS)?;
                    txn.open_table(TableDefinition::<&str, u64>::new("schema"))?
                        .insert("version", 2)?;
                    Ok(())
                })
                .await
                .expect("rewinding the layout");
        }
        let store = RedbMetadataStore::open(&path).expect("opening a version 2 database");
        let quota = store.quota("a").await.expect("quota");
        assert_eq!(quota.limit, None, "no limit before quotas");
        let both = (shared.bytes.len() + own.bytes.len()) as u64;
        assert_eq!(quota.used, both, "each manifest counted once");
        let one: RepositoryName = "a/one".parse().expect("a name");
        assert!(
            store
                .delete_manifest(&one, &shared.digest)
                .await
                .expect("delete")
        );
        assert_eq!(
            store.quota("a").await.expect("quota").used,
            both,
            "a/two holds it"
        );
    }
}
