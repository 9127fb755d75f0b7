//! The storage ports' conformance suites, run against the local adapters.

use berth_core::conformance::{
    run_all_account_store, run_all_blob_store, run_all_metadata_store, run_all_replication_store,
};
use berth_store_local::{FsBlobStore, RedbMetadataStore, open_data_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_blob_store_conforms() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = FsBlobStore::open(dir.path()).expect("opening the blob store");
    run_all_blob_store(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_metadata_store_conforms() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = RedbMetadataStore::open(dir.path().join("metadata.redb")).expect("opening");
    run_all_metadata_store(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_account_store_conforms() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = RedbMetadataStore::open(dir.path().join("metadata.redb")).expect("opening");
    run_all_account_store(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_audit_store_conforms() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = RedbMetadataStore::open(dir.path().join("metadata.redb")).expect("opening");
    berth_core::conformance::audit_store::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_audit_store_counts_in_its_own_database() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = RedbMetadataStore::open(dir.path().join("metadata.redb")).expect("opening");
    berth_core::conformance::audit_store::run_all_counted(&store, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_audit_store_counts_in_another_database() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let audit = RedbMetadataStore::open(dir.path().join("audit.redb")).expect("opening");
    let statistics = RedbMetadataStore::open(dir.path().join("statistics.redb")).expect("opening");
    berth_core::conformance::audit_store::run_all_counted(&audit, &statistics).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_statistics_store_conforms() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = RedbMetadataStore::open(dir.path().join("metadata.redb")).expect("opening");
    berth_core::conformance::statistics_store::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_webhook_store_conforms() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = RedbMetadataStore::open(dir.path().join("metadata.redb")).expect("opening");
    berth_core::conformance::webhook_store::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_replication_store_conforms() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = RedbMetadataStore::open(dir.path().join("metadata.redb")).expect("opening");
    run_all_replication_store(&store).await;
}

/// Cases are written to share a store, as adapters over a shared bucket or table must:
/// running every case twice over one data directory proves they do here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suites_share_one_data_directory() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (blobs, metadata) = open_data_dir(dir.path()).expect("opening the data directory");
    for _ in 0..2 {
        run_all_blob_store(&blobs).await;
        run_all_metadata_store(&metadata).await;
        run_all_account_store(&metadata).await;
        run_all_replication_store(&metadata).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_garbage_index_conforms() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = RedbMetadataStore::open(dir.path().join("metadata.redb")).expect("opening");
    berth_core::conformance::garbage_index::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_quota_store_conforms() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = RedbMetadataStore::open(dir.path().join("metadata.redb")).expect("opening");
    berth_core::conformance::quota_store::run_all(std::sync::Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_retention_store_conforms() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = RedbMetadataStore::open(dir.path().join("metadata.redb")).expect("opening");
    berth_core::conformance::retention_store::run_all(&store).await;
}
