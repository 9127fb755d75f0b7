//! Berth's local storage, for `berth serve` without any cloud account: blob bytes in a
//! directory ([`FsBlobStore`]) and registry metadata, accounts, projects and replication in
//! an embedded redb database ([`RedbMetadataStore`], which implements `MetadataStore`,
//! `AccountStore`, `ReplicationStore`, `AuditStore`, `StatisticsStore`, `WebhookStore`,
//! `RetentionStore`, `QuotaStore`, and garbage collection's `GarbageIndex` and `GcHistory`).
//!
//! A data directory holds both:
//!
//! ```text
//! <data-dir>/blobs/...        published blobs, by content address
//! <data-dir>/uploads/...      bytes staged by uploads in progress
//! <data-dir>/metadata.redb    repositories, manifests, tags, links, referrers, sessions,
//!                             users, projects, members, robot accounts, login failures,
//!                             replication endpoints, policies, executions and tasks,
//!                             the audit log, pull and push counters, webhook policies
//!                             and deliveries, blob records and garbage collection runs,
//!                             project quota limits, usage and charges, retention
//!                             policies, executions and tasks
//! ```

mod accounts;
mod audit;
mod blobs;
mod garbage;
mod metadata;
mod quota;
mod replication;
mod retention;
mod statistics;
mod webhooks;

use std::path::Path;

use berth_core::Result;
pub use blobs::FsBlobStore;
pub use metadata::RedbMetadataStore;

/// Name of the metadata database inside a data directory.
pub const METADATA_FILE: &str = "metadata.redb";

/// Opens (creating what is missing) the blob store and the metadata store of a data
/// directory.
pub fn open_data_dir(data_dir: impl AsRef<Path>) -> Result<(FsBlobStore, RedbMetadataStore)> {
    let data_dir = data_dir.as_ref();
    let blobs = FsBlobStore::open(data_dir)?;
    let metadata = RedbMetadataStore::open(data_dir.join(METADATA_FILE))?;
    Ok((blobs, metadata))
}
