//! The conformance suites of the storage ports: every adapter runs these same cases from its
//! own tests, so that all of them honour the contracts written in [`crate::ports`],
//! [`crate::accounts`] and [`crate::replication`].
//!
//! Each case is a plain `async fn` over `&dyn BlobStore`, `&dyn MetadataStore`,
//! `&dyn AccountStore` or `&dyn ReplicationStore` that panics with a message naming what
//! broke. Cases create uniquely named repositories, uploads, blobs, users, projects and robots,
//! and replication records under freshly drawn ids, so they may share one store (and one
//! DynamoDB table or S3 bucket) and run in any order. Run everything with
//! [`run_all_blob_store`], [`run_all_metadata_store`], [`run_all_account_store`] and
//! [`run_all_replication_store`]:
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread")]
//! async fn blob_store_conforms() {
//!     let dir = tempfile::tempdir().unwrap();
//!     let store = MyBlobStore::open(dir.path()).unwrap();
//!     berth_core::conformance::run_all_blob_store(&store).await;
//! }
//! ```
//!
//! Enabled by the `conformance` cargo feature; adapters take it as a dev-dependency.

use std::io;

use bytes::Bytes;
use futures_util::StreamExt;

use crate::accounts::AccountStore;
use crate::digest::{Algorithm, Digest, DigestHasher};
use crate::error::{ErrorCode, Result};
use crate::names::{RepositoryName, Tag, UploadId};
use crate::ports::{BlobStore, ByteStream, MetadataStore};
use crate::replication::ReplicationStore;

pub mod account_store;
pub mod audit_store;
pub mod garbage_index;
pub mod quota_store;
pub mod replication_store;
pub mod retention_store;
pub mod statistics_store;
pub mod webhook_store;

/// Runs every blob store case, announcing each on stderr so a failure names its case.
pub async fn run_all_blob_store(store: &dyn BlobStore) {
    use blob_store::*;
    announce("blob_store::missing_blob_is_unknown");
    missing_blob_is_unknown(store).await;
    announce("blob_store::upload_in_several_appends");
    upload_in_several_appends(store).await;
    announce("blob_store::range_reads");
    range_reads(store).await;
    announce("blob_store::large_blob_in_small_chunks");
    large_blob_in_small_chunks(store).await;
    announce("blob_store::sha512_blob");
    sha512_blob(store).await;
    announce("blob_store::zero_length_blob");
    zero_length_blob(store).await;
    announce("blob_store::interrupted_append_is_discarded");
    interrupted_append_is_discarded(store).await;
    announce("blob_store::interrupted_first_append_is_discarded");
    interrupted_first_append_is_discarded(store).await;
    announce("blob_store::commit_after_interrupted_append_publishes_staged_bytes_only");
    commit_after_interrupted_append_publishes_staged_bytes_only(store).await;
    announce("blob_store::commit_when_blob_exists_keeps_one_copy");
    commit_when_blob_exists_keeps_one_copy(store).await;
    announce("blob_store::concurrent_commits_of_one_blob");
    concurrent_commits_of_one_blob(store).await;
    announce("blob_store::abort_drops_the_upload");
    abort_drops_the_upload(store).await;
    announce("blob_store::delete_removes_the_blob");
    delete_removes_the_blob(store).await;
}

/// Runs every metadata store case, announcing each on stderr so a failure names its case.
pub async fn run_all_metadata_store(store: &dyn MetadataStore) {
    use metadata_store::*;
    announce("metadata_store::manifest_by_digest");
    manifest_by_digest(store).await;
    announce("metadata_store::manifests_present");
    manifests_present(store).await;
    announce("metadata_store::tag_points_at_a_manifest_and_moves");
    tag_points_at_a_manifest_and_moves(store).await;
    announce("metadata_store::delete_manifest_removes_its_tags_and_referrer");
    delete_manifest_removes_its_tags_and_referrer(store).await;
    announce("metadata_store::delete_tag_keeps_the_manifest");
    delete_tag_keeps_the_manifest(store).await;
    announce("metadata_store::tags_paginate_in_lexical_order");
    tags_paginate_in_lexical_order(store).await;
    announce("metadata_store::repositories_paginate_in_lexical_order");
    repositories_paginate_in_lexical_order(store).await;
    announce("metadata_store::repository_exists_after_a_link_or_a_manifest");
    repository_exists_after_a_link_or_a_manifest(store).await;
    announce("metadata_store::referrers_of_a_subject");
    referrers_of_a_subject(store).await;
    announce("metadata_store::blob_links");
    blob_links(store).await;
    announce("metadata_store::manifests_and_tag_targets_page_in_key_order");
    manifests_and_tag_targets_page_in_key_order(store).await;
    announce("metadata_store::delete_repository_removes_everything_in_it");
    delete_repository_removes_everything_in_it(store).await;
    announce("metadata_store::upload_sessions");
    upload_sessions(store).await;
    announce("metadata_store::update_upload_is_conditional");
    update_upload_is_conditional(store).await;
    announce("metadata_store::racing_upload_updates_have_one_winner");
    racing_upload_updates_have_one_winner(store).await;
}

/// Runs every account store case, announcing each on stderr so a failure names its case.
pub async fn run_all_account_store(store: &dyn AccountStore) {
    use account_store::*;
    announce("account_store::users_round_trip");
    users_round_trip(store).await;
    announce("account_store::users_paginate_in_name_order");
    users_paginate_in_name_order(store).await;
    announce("account_store::projects_round_trip");
    projects_round_trip(store).await;
    announce("account_store::projects_paginate_in_name_order");
    projects_paginate_in_name_order(store).await;
    announce("account_store::members_and_roles");
    members_and_roles(store).await;
    announce("account_store::members_need_a_user_and_a_project");
    members_need_a_user_and_a_project(store).await;
    announce("account_store::members_and_memberships_list_in_name_order");
    members_and_memberships_list_in_name_order(store).await;
    announce("account_store::concurrent_members_of_one_project");
    concurrent_members_of_one_project(store).await;
    announce("account_store::delete_user_removes_their_memberships");
    delete_user_removes_their_memberships(store).await;
    announce("account_store::robots_round_trip");
    robots_round_trip(store).await;
    announce("account_store::robots_need_their_project");
    robots_need_their_project(store).await;
    announce("account_store::robots_list_in_name_order_per_project");
    robots_list_in_name_order_per_project(store).await;
    announce("account_store::delete_project_removes_members_and_robots");
    delete_project_removes_members_and_robots(store).await;
    announce("account_store::login_failures_count_within_a_window");
    login_failures_count_within_a_window(store).await;
    announce("account_store::login_failure_keys_are_independent");
    login_failure_keys_are_independent(store).await;
    announce("account_store::concurrent_login_failures_all_count");
    concurrent_login_failures_all_count(store).await;
}

/// Runs every replication store case, announcing each on stderr so a failure names its case.
pub async fn run_all_replication_store(store: &dyn ReplicationStore) {
    use replication_store::*;
    announce("replication_store::ids_increase_and_are_unique_per_kind");
    ids_increase_and_are_unique_per_kind(store).await;
    announce("replication_store::registries_round_trip");
    registries_round_trip(store).await;
    announce("replication_store::policies_round_trip");
    policies_round_trip(store).await;
    announce("replication_store::executions_newest_first");
    executions_newest_first(store).await;
    announce("replication_store::tasks_of_an_execution");
    tasks_of_an_execution(store).await;
    announce("replication_store::update_task_is_conditional");
    update_task_is_conditional(store).await;
    announce("replication_store::racing_claims_have_one_winner");
    racing_claims_have_one_winner(store).await;
    announce("replication_store::claim_schedule_once_per_tick");
    claim_schedule_once_per_tick(store).await;
}

fn announce(case: &str) {
    eprintln!("conformance: {case}");
}

/// A short random suffix that keeps names of concurrent or repeated runs apart.
fn nonce() -> String {
    let mut text = uuid::Uuid::new_v4().simple().to_string();
    text.truncate(12);
    text
}

/// Bytes no other case or run produces: a random prefix, then a pattern that is not periodic
/// at any power of two, so that a misplaced buffer shows up as wrong bytes.
fn unique_bytes(len: usize) -> Vec<u8> {
    let prefix = uuid::Uuid::new_v4();
    let mut bytes: Vec<u8> = prefix.as_bytes().iter().copied().take(len).collect();
    bytes.extend((bytes.len()..len).map(|i| (i % 251) as u8 ^ (i / 251 % 253) as u8));
    bytes
}

fn body(chunks: impl IntoIterator<Item = Vec<u8>>) -> ByteStream {
    let chunks: Vec<io::Result<Bytes>> = chunks.into_iter().map(|c| Ok(Bytes::from(c))).collect();
    Box::pin(futures_util::stream::iter(chunks))
}

/// A body that delivers `chunks` and then fails, as a dropped client connection does.
fn failing_body(chunks: impl IntoIterator<Item = Vec<u8>>) -> ByteStream {
    let mut items: Vec<io::Result<Bytes>> =
        chunks.into_iter().map(|c| Ok(Bytes::from(c))).collect();
    items.push(Err(io::Error::new(
        io::ErrorKind::ConnectionReset,
        "conformance: the client went away",
    )));
    Box::pin(futures_util::stream::iter(items))
}

async fn collect(stream: Result<ByteStream>, what: &str) -> Vec<u8> {
    let mut stream = stream.unwrap_or_else(|e| panic!("{what}: opening the stream failed: {e}"));
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.unwrap_or_else(|e| panic!("{what}: stream failed: {e}")));
    }
    bytes
}

/// Compares byte strings without printing megabytes when they differ.
#[track_caller]
fn assert_same_bytes(actual: &[u8], expected: &[u8], what: &str) {
    if actual == expected {
        return;
    }
    let first_difference = actual
        .iter()
        .zip(expected)
        .position(|(a, e)| a != e)
        .unwrap_or(actual.len().min(expected.len()));
    panic!(
        "{what}: got {} bytes, expected {}; first difference at byte {first_difference}",
        actual.len(),
        expected.len()
    );
}

/// The blob store's cases.
pub mod blob_store {
    use futures_util::future::join;

    use super::*;
    use crate::ports::StagedUpload;

    async fn begin(store: &dyn BlobStore) -> StagedUpload {
        let id = UploadId::generate();
        let backend = store
            .begin_upload(&id)
            .await
            .unwrap_or_else(|e| panic!("begin_upload({id}) failed: {e}"));
        StagedUpload {
            id,
            size: 0,
            backend,
        }
    }

    /// Appends `chunks` as one request body and returns the upload grown by what it wrote.
    async fn append(
        store: &dyn BlobStore,
        staged: StagedUpload,
        chunks: Vec<Vec<u8>>,
    ) -> StagedUpload {
        let expected: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        let (written, backend) = store
            .append(&staged, body(chunks))
            .await
            .unwrap_or_else(|e| panic!("append to {} at {} failed: {e}", staged.id, staged.size));
        assert_eq!(
            written, expected,
            "append must report the number of bytes it appended"
        );
        StagedUpload {
            size: staged.size + written,
            backend,
            ..staged
        }
    }

    async fn commit(store: &dyn BlobStore, staged: &StagedUpload, digest: &Digest) {
        store
            .commit(staged, digest)
            .await
            .unwrap_or_else(|e| panic!("commit of {} as {digest} failed: {e}", staged.id));
    }

    /// Uploads `bytes` in one append and publishes them under their sha256 digest.
    async fn put_blob(store: &dyn BlobStore, bytes: &[u8]) -> Digest {
        let digest = Digest::of(Algorithm::Sha256, bytes);
        let staged = append(store, begin(store).await, vec![bytes.to_vec()]).await;
        commit(store, &staged, &digest).await;
        digest
    }

    async fn read_all(store: &dyn BlobStore, digest: &Digest) -> Vec<u8> {
        collect(store.read(digest, None).await, &format!("read({digest})")).await
    }

    async fn read_staged(store: &dyn BlobStore, staged: &StagedUpload) -> Vec<u8> {
        let what = format!("read_staged({} of {} bytes)", staged.id, staged.size);
        collect(store.read_staged(staged).await, &what).await
    }

    async fn stat(store: &dyn BlobStore, digest: &Digest) -> Option<u64> {
        store
            .stat(digest)
            .await
            .unwrap_or_else(|e| panic!("stat({digest}) failed: {e}"))
    }

    #[track_caller]
    fn assert_blob_unknown(outcome: Result<ByteStream>, what: &str) {
        match outcome {
            Ok(_) => panic!("{what}: a missing blob must be BLOB_UNKNOWN, got a stream"),
            Err(e) => assert_eq!(e.code(), ErrorCode::BlobUnknown, "{what}: {e}"),
        }
    }

    /// stat, read, ranged read and delete of a blob that was never stored.
    pub async fn missing_blob_is_unknown(store: &dyn BlobStore) {
        let digest = Digest::of(Algorithm::Sha256, &unique_bytes(64));
        assert_eq!(stat(store, &digest).await, None, "stat of a missing blob");
        assert_blob_unknown(store.read(&digest, None).await, "read of a missing blob");
        assert_blob_unknown(
            store.read(&digest, Some(0..1)).await,
            "ranged read of a missing blob",
        );
        store
            .delete(&digest)
            .await
            .unwrap_or_else(|e| panic!("deleting a missing blob is not an error: {e}"));
    }

    /// Several appends, each of several chunks; the staged bytes and the blob are exact.
    pub async fn upload_in_several_appends(store: &dyn BlobStore) {
        let bytes = unique_bytes(300_000);
        let staged = begin(store).await;
        assert_eq!(
            read_staged(store, &staged).await,
            b"",
            "a new upload stages nothing"
        );
        let staged = append(
            store,
            staged,
            vec![bytes[..10].to_vec(), bytes[10..1000].to_vec()],
        )
        .await;
        let staged = append(store, staged, vec![bytes[1000..1001].to_vec()]).await;
        let staged = append(store, staged, vec![]).await;
        let staged = append(store, staged, vec![bytes[1001..].to_vec()]).await;
        assert_eq!(staged.size, bytes.len() as u64);
        assert_same_bytes(&read_staged(store, &staged).await, &bytes, "staged bytes");

        let digest = Digest::of(Algorithm::Sha256, &bytes);
        assert_eq!(
            stat(store, &digest).await,
            None,
            "no blob is visible before commit"
        );
        commit(store, &staged, &digest).await;
        assert_eq!(
            stat(store, &digest).await,
            Some(bytes.len() as u64),
            "stat after commit"
        );
        assert_same_bytes(&read_all(store, &digest).await, &bytes, "committed blob");
    }

    /// Ranges at the edges of the blob and across typical buffer sizes.
    pub async fn range_reads(store: &dyn BlobStore) {
        const MIB: u64 = 1024 * 1024;
        let bytes = unique_bytes(3 * MIB as usize + 17);
        let size = bytes.len() as u64;
        let digest = put_blob(store, &bytes).await;
        for range in [
            0..1,
            0..size,
            1..size,
            size - 1..size,
            5..MIB + 5,
            MIB - 1..2 * MIB + 1,
            2 * MIB..3 * MIB,
            3 * MIB..size,
        ] {
            let what = format!("read({digest}, {range:?})");
            let read = collect(store.read(&digest, Some(range.clone())).await, &what).await;
            let expected = &bytes[range.start as usize..range.end as usize];
            assert_same_bytes(&read, expected, &what);
        }
    }

    /// Several MiB in odd-sized chunks, as a network body arrives.
    pub async fn large_blob_in_small_chunks(store: &dyn BlobStore) {
        let bytes = unique_bytes(6 * 1024 * 1024 + 7);
        let chunks: Vec<Vec<u8>> = bytes.chunks(10_007).map(<[u8]>::to_vec).collect();
        let staged = append(store, begin(store).await, chunks).await;
        let digest = Digest::of(Algorithm::Sha256, &bytes);
        commit(store, &staged, &digest).await;
        assert_eq!(stat(store, &digest).await, Some(bytes.len() as u64));
        assert_same_bytes(&read_all(store, &digest).await, &bytes, "large blob");
    }

    /// Blobs are addressed by sha512 digests as well as sha256 ones.
    pub async fn sha512_blob(store: &dyn BlobStore) {
        let bytes = unique_bytes(1000);
        let digest = Digest::of(Algorithm::Sha512, &bytes);
        let staged = append(store, begin(store).await, vec![bytes.clone()]).await;
        commit(store, &staged, &digest).await;
        assert_eq!(stat(store, &digest).await, Some(1000));
        assert_same_bytes(&read_all(store, &digest).await, &bytes, "sha512 blob");
        let sha256 = Digest::of(Algorithm::Sha256, &bytes);
        assert_eq!(
            stat(store, &sha256).await,
            None,
            "the sha256 address holds nothing"
        );
    }

    /// An empty blob can be committed with or without an (empty) append, and read back.
    pub async fn zero_length_blob(store: &dyn BlobStore) {
        let digest = Digest::of(Algorithm::Sha256, b"");
        let never_appended = begin(store).await;
        commit(store, &never_appended, &digest).await;
        assert_eq!(
            stat(store, &digest).await,
            Some(0),
            "stat of the empty blob"
        );
        assert_eq!(read_all(store, &digest).await, b"", "the empty blob");

        let empty_append = append(store, begin(store).await, vec![Vec::new()]).await;
        assert_eq!(empty_append.size, 0);
        assert_eq!(read_staged(store, &empty_append).await, b"");
        commit(store, &empty_append, &digest).await;
        assert_eq!(
            stat(store, &digest).await,
            Some(0),
            "the empty blob, committed twice"
        );
    }

    /// A failed append returns an error; the next append at the old size replaces whatever
    /// the failed one left, even when that was longer than the new bytes.
    pub async fn interrupted_append_is_discarded(store: &dyn BlobStore) {
        let staged = append(store, begin(store).await, vec![b"hello ".to_vec()]).await;
        let leftover = unique_bytes(3 * 1024 * 1024 + 5);
        let failed = store
            .append(
                &staged,
                failing_body(vec![leftover[..100].to_vec(), leftover[100..].to_vec()]),
            )
            .await;
        assert!(failed.is_err(), "an append whose body fails must fail");
        assert_eq!(
            read_staged(store, &staged).await,
            b"hello ",
            "staged bytes after a failed append"
        );

        let staged = append(store, staged, vec![b"world".to_vec()]).await;
        assert_eq!(staged.size, 11);
        assert_eq!(read_staged(store, &staged).await, b"hello world");
        let digest = Digest::of(Algorithm::Sha256, b"hello world");
        commit(store, &staged, &digest).await;
        assert_eq!(read_all(store, &digest).await, b"hello world");
    }

    /// The same, when the very first append fails.
    pub async fn interrupted_first_append_is_discarded(store: &dyn BlobStore) {
        let staged = begin(store).await;
        let failed = store
            .append(&staged, failing_body(vec![unique_bytes(70_000)]))
            .await;
        assert!(failed.is_err(), "an append whose body fails must fail");
        let bytes = unique_bytes(10);
        let staged = append(store, staged, vec![bytes.clone()]).await;
        assert_eq!(read_staged(store, &staged).await, bytes);
        let digest = Digest::of(Algorithm::Sha256, &bytes);
        commit(store, &staged, &digest).await;
        assert_eq!(read_all(store, &digest).await, bytes);
    }

    /// A commit right after a failed append publishes `staged.size` bytes, not the leftover.
    pub async fn commit_after_interrupted_append_publishes_staged_bytes_only(
        store: &dyn BlobStore,
    ) {
        let bytes = unique_bytes(5000);
        let staged = append(store, begin(store).await, vec![bytes.clone()]).await;
        let failed = store
            .append(&staged, failing_body(vec![unique_bytes(2_000_000)]))
            .await;
        assert!(failed.is_err(), "an append whose body fails must fail");
        let digest = Digest::of(Algorithm::Sha256, &bytes);
        commit(store, &staged, &digest).await;
        assert_eq!(stat(store, &digest).await, Some(5000));
        assert_same_bytes(
            &read_all(store, &digest).await,
            &bytes,
            "blob after a failed append",
        );
    }

    /// Committing bytes that are already stored succeeds and leaves the blob intact.
    pub async fn commit_when_blob_exists_keeps_one_copy(store: &dyn BlobStore) {
        let bytes = unique_bytes(4096);
        let digest = put_blob(store, &bytes).await;
        let again = append(store, begin(store).await, vec![bytes.clone()]).await;
        commit(store, &again, &digest).await;
        assert_eq!(stat(store, &digest).await, Some(4096));
        assert_same_bytes(
            &read_all(store, &digest).await,
            &bytes,
            "blob committed twice",
        );
    }

    /// Two uploads of the same bytes committed at once both succeed.
    pub async fn concurrent_commits_of_one_blob(store: &dyn BlobStore) {
        let bytes = unique_bytes(2 * 1024 * 1024 + 3);
        let digest = Digest::of(Algorithm::Sha256, &bytes);
        let first = append(store, begin(store).await, vec![bytes.clone()]).await;
        let second = append(store, begin(store).await, vec![bytes.clone()]).await;
        let (a, b) = join(
            store.commit(&first, &digest),
            store.commit(&second, &digest),
        )
        .await;
        a.unwrap_or_else(|e| panic!("first of two racing commits failed: {e}"));
        b.unwrap_or_else(|e| panic!("second of two racing commits failed: {e}"));
        assert_same_bytes(
            &read_all(store, &digest).await,
            &bytes,
            "blob after racing commits",
        );
    }

    /// Abort publishes nothing; aborting twice, or an unknown upload, is not an error.
    pub async fn abort_drops_the_upload(store: &dyn BlobStore) {
        let bytes = unique_bytes(1000);
        let staged = append(store, begin(store).await, vec![bytes.clone()]).await;
        store
            .abort(&staged)
            .await
            .unwrap_or_else(|e| panic!("abort failed: {e}"));
        store
            .abort(&staged)
            .await
            .unwrap_or_else(|e| panic!("aborting an aborted upload is not an error: {e}"));
        let unknown = StagedUpload {
            id: UploadId::generate(),
            size: 0,
            backend: Vec::new(),
        };
        store
            .abort(&unknown)
            .await
            .unwrap_or_else(|e| panic!("aborting an unknown upload is not an error: {e}"));
        let digest = Digest::of(Algorithm::Sha256, &bytes);
        assert_eq!(
            stat(store, &digest).await,
            None,
            "an aborted upload publishes nothing"
        );
    }

    /// Delete removes the bytes; deleting again is not an error.
    pub async fn delete_removes_the_blob(store: &dyn BlobStore) {
        let bytes = unique_bytes(777);
        let digest = put_blob(store, &bytes).await;
        store
            .redirect_url(&digest)
            .await
            .unwrap_or_else(|e| panic!("redirect_url({digest}) failed: {e}"));
        store
            .delete(&digest)
            .await
            .unwrap_or_else(|e| panic!("delete({digest}) failed: {e}"));
        assert_eq!(stat(store, &digest).await, None, "stat after delete");
        assert_blob_unknown(store.read(&digest, None).await, "read after delete");
        store
            .delete(&digest)
            .await
            .unwrap_or_else(|e| panic!("deleting a deleted blob is not an error: {e}"));
        let again = put_blob(store, &bytes).await;
        assert_same_bytes(
            &read_all(store, &again).await,
            &bytes,
            "blob stored again after delete",
        );
    }
}

/// The metadata store's cases.
pub mod metadata_store {
    use std::collections::BTreeMap;

    use futures_util::future::join_all;

    use super::*;
    use crate::manifest::{ReferrerDescriptor, media_type};
    use crate::ports::{ManifestRecord, StagedUpload, UploadSession};

    /// A repository name no other case or run uses: `<label>-<nonce>`.
    fn unique_repository(label: &str) -> RepositoryName {
        repository(&format!("{label}-{}", nonce()))
    }

    fn repository(name: &str) -> RepositoryName {
        name.parse().unwrap_or_else(|e| panic!("{name:?}: {e}"))
    }

    fn tag(name: &str) -> Tag {
        name.parse().unwrap_or_else(|e| panic!("{name:?}: {e}"))
    }

    fn digest_of(text: &str) -> Digest {
        Digest::of(Algorithm::Sha256, text.as_bytes())
    }

    /// A manifest whose bytes are deliberately not canonical JSON, so a store that
    /// re-serialises them is caught.
    fn manifest(seed: &str) -> ManifestRecord {
        let bytes = format!(
            "{{\n   \"schemaVersion\" :2, \"mediaType\":\"{}\",\t\"seed\": \"{seed}-{}\" }}\n",
            media_type::OCI_MANIFEST,
            nonce()
        );
        ManifestRecord {
            digest: Digest::of(Algorithm::Sha256, bytes.as_bytes()),
            media_type: media_type::OCI_MANIFEST.to_owned(),
            bytes: Bytes::from(bytes),
            referrer: None,
        }
    }

    /// A manifest that names `subject`, with the referrer entry the registry derives.
    fn referrer_of(subject: &Digest, seed: &str) -> ManifestRecord {
        let mut record = manifest(seed);
        let descriptor = ReferrerDescriptor {
            media_type: record.media_type.clone(),
            digest: record.digest.clone(),
            size: record.bytes.len() as u64,
            artifact_type: Some("application/vnd.example.signature".to_owned()),
            annotations: BTreeMap::from([("org.example.seed".to_owned(), seed.to_owned())]),
        };
        record.referrer = Some((subject.clone(), descriptor));
        record
    }

    async fn put(
        store: &dyn MetadataStore,
        repository: &RepositoryName,
        record: &ManifestRecord,
        tag: Option<&Tag>,
    ) {
        store
            .put_manifest(repository, record, tag)
            .await
            .unwrap_or_else(|e| {
                panic!("put_manifest({repository}, {}) failed: {e}", record.digest)
            });
    }

    async fn get(
        store: &dyn MetadataStore,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Option<ManifestRecord> {
        store
            .manifest(repository, digest)
            .await
            .unwrap_or_else(|e| panic!("manifest({repository}, {digest}) failed: {e}"))
    }

    async fn tagged(
        store: &dyn MetadataStore,
        repository: &RepositoryName,
        tag: &Tag,
    ) -> Option<ManifestRecord> {
        store
            .tagged_manifest(repository, tag)
            .await
            .unwrap_or_else(|e| panic!("tagged_manifest({repository}, {tag}) failed: {e}"))
    }

    async fn tags(
        store: &dyn MetadataStore,
        repository: &RepositoryName,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<String> {
        store
            .tags(repository, after, limit)
            .await
            .unwrap_or_else(|e| panic!("tags({repository}, {after:?}, {limit}) failed: {e}"))
    }

    async fn exists(store: &dyn MetadataStore, repository: &RepositoryName) -> bool {
        store
            .repository_exists(repository)
            .await
            .unwrap_or_else(|e| panic!("repository_exists({repository}) failed: {e}"))
    }

    async fn referrers(
        store: &dyn MetadataStore,
        repository: &RepositoryName,
        subject: &Digest,
    ) -> Vec<Digest> {
        store
            .referrers(repository, subject)
            .await
            .unwrap_or_else(|e| panic!("referrers({repository}, {subject}) failed: {e}"))
            .into_iter()
            .map(|descriptor| descriptor.digest)
            .collect()
    }

    async fn link(
        store: &dyn MetadataStore,
        repository: &RepositoryName,
        digest: &Digest,
        size: u64,
    ) {
        store
            .link_blob(repository, digest, size)
            .await
            .unwrap_or_else(|e| panic!("link_blob({repository}, {digest}) failed: {e}"));
    }

    async fn links(
        store: &dyn MetadataStore,
        repository: &RepositoryName,
        digests: &[Digest],
    ) -> Vec<Option<u64>> {
        store
            .blob_links(repository, digests)
            .await
            .unwrap_or_else(|e| panic!("blob_links({repository}) failed: {e}"))
    }

    async fn upload(store: &dyn MetadataStore, id: &UploadId) -> Option<UploadSession> {
        store
            .upload(id)
            .await
            .unwrap_or_else(|e| panic!("upload({id}) failed: {e}"))
    }

    async fn update(
        store: &dyn MetadataStore,
        session: &UploadSession,
        expected_size: u64,
    ) -> bool {
        store
            .update_upload(session, expected_size)
            .await
            .unwrap_or_else(|e| panic!("update_upload(expected {expected_size}) failed: {e}"))
    }

    fn session(repository: &RepositoryName) -> UploadSession {
        UploadSession {
            repository: repository.clone(),
            staged: StagedUpload {
                id: UploadId::generate(),
                size: 0,
                backend: Vec::new(),
            },
            hash: DigestHasher::new(Algorithm::Sha256).save(),
            started_at: 1_700_000_000,
        }
    }

    /// The session grown by `bytes`, as the registry records it after an append.
    fn grown(session: &UploadSession, bytes: &[u8], backend: &[u8]) -> UploadSession {
        let mut hasher = DigestHasher::restore(&session.hash).expect("restoring a saved hash");
        hasher.update(bytes);
        UploadSession {
            staged: StagedUpload {
                size: session.staged.size + bytes.len() as u64,
                backend: backend.to_vec(),
                ..session.staged.clone()
            },
            hash: hasher.save(),
            ..session.clone()
        }
    }

    /// A manifest reads back by digest exactly as stored, in its repository only; storing it
    /// again is not an error.
    pub async fn manifest_by_digest(store: &dyn MetadataStore) {
        let repo = unique_repository("manifest");
        let mut record = manifest("by-digest");
        record.media_type = media_type::DOCKER_MANIFEST.to_owned();
        assert_eq!(
            get(store, &repo, &record.digest).await,
            None,
            "before put_manifest"
        );
        put(store, &repo, &record, None).await;
        assert_eq!(
            get(store, &repo, &record.digest).await.as_ref(),
            Some(&record),
            "by digest"
        );
        put(store, &repo, &record, None).await;
        assert_eq!(
            get(store, &repo, &record.digest).await.as_ref(),
            Some(&record),
            "stored twice"
        );
        assert_eq!(
            tags(store, &repo, None, 100).await,
            Vec::<String>::new(),
            "no tag was given"
        );

        let neighbour = repository(&format!("{repo}-b"));
        assert_eq!(
            get(store, &neighbour, &record.digest).await,
            None,
            "another repository"
        );
    }

    /// `manifests_present` answers for each digest, in order.
    pub async fn manifests_present(store: &dyn MetadataStore) {
        let repo = unique_repository("present");
        let (a, b) = (manifest("a"), manifest("b"));
        put(store, &repo, &a, None).await;
        put(store, &repo, &b, None).await;
        let missing = digest_of("missing");
        let present = store
            .manifests_present(
                &repo,
                &[
                    b.digest.clone(),
                    missing,
                    a.digest.clone(),
                    b.digest.clone(),
                ],
            )
            .await
            .unwrap_or_else(|e| panic!("manifests_present failed: {e}"));
        assert_eq!(present, [true, false, true, true]);
        let none = store
            .manifests_present(&repo, &[])
            .await
            .unwrap_or_else(|e| panic!("manifests_present(&[]) failed: {e}"));
        assert!(none.is_empty());
        let other = unique_repository("present-other");
        let elsewhere = store
            .manifests_present(&other, std::slice::from_ref(&a.digest))
            .await
            .unwrap_or_else(|e| panic!("manifests_present failed: {e}"));
        assert_eq!(elsewhere, [false], "a manifest of another repository");
    }

    /// A tag reads back its manifest; pushing another manifest under the tag moves it and
    /// leaves the first manifest reachable by digest.
    pub async fn tag_points_at_a_manifest_and_moves(store: &dyn MetadataStore) {
        let repo = unique_repository("tagmove");
        let latest = tag("latest");
        let (first, second) = (manifest("first"), manifest("second"));
        assert_eq!(tagged(store, &repo, &latest).await, None, "before any push");
        put(store, &repo, &first, Some(&latest)).await;
        assert_eq!(
            tagged(store, &repo, &latest).await.as_ref(),
            Some(&first),
            "tag after push"
        );
        put(store, &repo, &second, Some(&latest)).await;
        assert_eq!(
            tagged(store, &repo, &latest).await.as_ref(),
            Some(&second),
            "tag after move"
        );
        assert_eq!(
            get(store, &repo, &first.digest).await.as_ref(),
            Some(&first),
            "old manifest"
        );
        assert_eq!(
            tags(store, &repo, None, 100).await,
            ["latest"],
            "one tag, moved"
        );
        put(store, &repo, &second, Some(&tag("v1"))).await;
        assert_eq!(
            tags(store, &repo, None, 100).await,
            ["latest", "v1"],
            "two tags, one manifest"
        );
        let other = unique_repository("tagmove-other");
        assert_eq!(
            tagged(store, &other, &latest).await,
            None,
            "the tag of another repository"
        );
    }

    /// Deleting a manifest removes every tag pointing at it and its referrer entry, and only
    /// those.
    pub async fn delete_manifest_removes_its_tags_and_referrer(store: &dyn MetadataStore) {
        let repo = unique_repository("delete");
        let subject = manifest("subject");
        let doomed = referrer_of(&subject.digest, "doomed");
        let kept = referrer_of(&subject.digest, "kept");
        put(store, &repo, &subject, Some(&tag("base"))).await;
        put(store, &repo, &doomed, Some(&tag("a"))).await;
        put(store, &repo, &doomed, Some(&tag("b"))).await;
        put(store, &repo, &kept, Some(&tag("c"))).await;
        assert_eq!(referrers(store, &repo, &subject.digest).await.len(), 2);

        let deleted = store.delete_manifest(&repo, &doomed.digest).await;
        assert!(
            deleted.unwrap_or_else(|e| panic!("delete_manifest failed: {e}")),
            "it existed"
        );
        assert_eq!(
            get(store, &repo, &doomed.digest).await,
            None,
            "deleted manifest"
        );
        assert_eq!(
            tagged(store, &repo, &tag("a")).await,
            None,
            "tag of the deleted manifest"
        );
        assert_eq!(
            tags(store, &repo, None, 100).await,
            ["base", "c"],
            "remaining tags"
        );
        assert_eq!(
            referrers(store, &repo, &subject.digest).await,
            std::slice::from_ref(&kept.digest),
            "remaining referrers"
        );
        assert_eq!(
            get(store, &repo, &kept.digest).await.as_ref(),
            Some(&kept),
            "other manifest"
        );

        let again = store.delete_manifest(&repo, &doomed.digest).await;
        assert!(
            !again.unwrap_or_else(|e| panic!("delete_manifest failed: {e}")),
            "already gone"
        );
        let never = store
            .delete_manifest(&repo, &digest_of("never stored"))
            .await;
        assert!(
            !never.unwrap_or_else(|e| panic!("delete_manifest failed: {e}")),
            "never stored"
        );
    }

    /// Deleting a tag leaves its manifest and the other tags.
    pub async fn delete_tag_keeps_the_manifest(store: &dyn MetadataStore) {
        let repo = unique_repository("deltag");
        let record = manifest("tagged");
        put(store, &repo, &record, Some(&tag("one"))).await;
        put(store, &repo, &record, Some(&tag("two"))).await;
        let deleted = store.delete_tag(&repo, &tag("one")).await;
        assert!(
            deleted.unwrap_or_else(|e| panic!("delete_tag failed: {e}")),
            "the tag existed"
        );
        assert_eq!(tagged(store, &repo, &tag("one")).await, None, "deleted tag");
        assert_eq!(
            tagged(store, &repo, &tag("two")).await.as_ref(),
            Some(&record),
            "other tag"
        );
        assert_eq!(
            get(store, &repo, &record.digest).await.as_ref(),
            Some(&record),
            "manifest"
        );
        let again = store.delete_tag(&repo, &tag("one")).await;
        assert!(
            !again.unwrap_or_else(|e| panic!("delete_tag failed: {e}")),
            "already gone"
        );
    }

    /// Tags list in byte-wise lexical order, page by page, and never include the tags of
    /// repositories whose names share a prefix.
    pub async fn tags_paginate_in_lexical_order(store: &dyn MetadataStore) {
        let repo = unique_repository("tags");
        let record = manifest("tags");
        let names = [
            "v1", "a_b", "ab", "a-", "a", "latest", "B", "a-b", "_x", "a.b", "A", "a0",
        ];
        for name in names {
            put(store, &repo, &record, Some(&tag(name))).await;
        }
        for neighbour in [
            format!("{repo}-b"),
            format!("{repo}/b"),
            format!("{repo}b"),
            format!("{repo}_b"),
        ] {
            put(
                store,
                &repository(&neighbour),
                &record,
                Some(&tag("zz-neighbour")),
            )
            .await;
            put(
                store,
                &repository(&neighbour),
                &record,
                Some(&tag("0-neighbour")),
            )
            .await;
        }
        let expected = [
            "A", "B", "_x", "a", "a-", "a-b", "a.b", "a0", "a_b", "ab", "latest", "v1",
        ];
        assert_eq!(tags(store, &repo, None, 100).await, expected, "all tags");
        assert_eq!(
            tags(store, &repo, None, 0).await,
            Vec::<String>::new(),
            "limit 0"
        );

        for limit in [1, 2, 3, 5] {
            let mut listed: Vec<String> = Vec::new();
            loop {
                let page = tags(store, &repo, listed.last().map(String::as_str), limit).await;
                assert!(
                    page.len() <= limit,
                    "a page of {limit} had {} tags",
                    page.len()
                );
                let done = page.len() < limit;
                listed.extend(page);
                if done {
                    break;
                }
                assert!(
                    listed.len() <= expected.len(),
                    "pagination never ends at limit {limit}"
                );
            }
            assert_eq!(listed, expected, "tags listed {limit} at a time");
        }
        assert_eq!(
            tags(store, &repo, Some("a."), 2).await,
            ["a.b", "a0"],
            "after a non-tag"
        );
        assert_eq!(
            tags(store, &repo, Some("v1"), 10).await,
            Vec::<String>::new(),
            "after the last"
        );
        assert_eq!(
            tags(store, &repo, Some("0"), 1).await,
            ["A"],
            "after something before all"
        );
        let unknown = unique_repository("tags-unknown");
        assert_eq!(
            tags(store, &unknown, None, 10).await,
            Vec::<String>::new(),
            "unknown repository"
        );
    }

    /// Repositories list in byte-wise lexical order, page by page. Other cases and runs
    /// share the store, so this lists from just before a unique prefix and stops where the
    /// prefix ends.
    pub async fn repositories_paginate_in_lexical_order(store: &dyn MetadataStore) {
        let prefix = format!("catalog{}", nonce());
        let suffixes = [
            "/a_b", "/a", "/ab", "/a/b", "-b", "/a-b", "/a.b", "", "/b/c/d", ".z",
        ];
        let blob = digest_of("catalog blob");
        for (i, suffix) in suffixes.iter().enumerate() {
            let name = repository(&format!("{prefix}{suffix}"));
            if i % 2 == 0 {
                link(store, &name, &blob, 12).await;
            } else {
                put(store, &name, &manifest("catalog"), None).await;
            }
        }
        let mut expected: Vec<String> = suffixes.iter().map(|s| format!("{prefix}{s}")).collect();
        expected.sort();
        assert_eq!(
            expected
                .iter()
                .map(|n| &n[prefix.len()..])
                .collect::<Vec<_>>(),
            [
                "", "-b", ".z", "/a", "/a-b", "/a.b", "/a/b", "/a_b", "/ab", "/b/c/d"
            ],
            "the expected order is byte-wise"
        );

        // Nothing sorts between `catalog<nonce>` minus its last character and our names
        // but names of this run, since the nonce is random.
        let before = &prefix[..prefix.len() - 1];
        let ours = |name: &String| name.starts_with(&prefix);
        for limit in [1, 3, 4, 100] {
            let mut listed: Vec<String> = Vec::new();
            let mut after = before.to_owned();
            loop {
                let page = store
                    .repositories(Some(&after), limit)
                    .await
                    .unwrap_or_else(|e| panic!("repositories({after:?}, {limit}) failed: {e}"));
                assert!(
                    page.len() <= limit,
                    "a page of {limit} had {} names",
                    page.len()
                );
                let sorted = page.windows(2).all(|w| w[0] < w[1]);
                assert!(sorted, "a page is not in lexical order: {page:?}");
                let done = page.len() < limit || !page.iter().all(ours);
                listed.extend(page.into_iter().filter(ours));
                assert!(
                    listed.len() <= expected.len(),
                    "pagination after {after:?} never ends at limit {limit}: {listed:?}"
                );
                match listed.last() {
                    Some(last) if !done => last.clone_into(&mut after),
                    _ => break,
                }
            }
            assert_eq!(listed, expected, "repositories listed {limit} at a time");
        }
        let first = store
            .repositories(None, 1)
            .await
            .unwrap_or_else(|e| panic!("repositories(None, 1) failed: {e}"));
        assert_eq!(first.len(), 1, "the first page of a non-empty catalog");
        let none = store
            .repositories(None, 0)
            .await
            .unwrap_or_else(|e| panic!("repositories(None, 0) failed: {e}"));
        assert!(none.is_empty(), "limit 0");
    }

    /// A repository exists once a blob link or a manifest was stored in it, and not because
    /// a repository whose name extends its name does.
    pub async fn repository_exists_after_a_link_or_a_manifest(store: &dyn MetadataStore) {
        let linked = unique_repository("exists-link");
        let pushed = unique_repository("exists-push");
        assert!(
            !exists(store, &linked).await,
            "a repository nothing was stored in"
        );
        link(store, &linked, &digest_of("exists"), 7).await;
        assert!(exists(store, &linked).await, "after a blob link");
        put(store, &pushed, &manifest("exists"), None).await;
        assert!(exists(store, &pushed).await, "after a manifest");

        let parent = unique_repository("exists-parent");
        put(
            store,
            &repository(&format!("{parent}/child")),
            &manifest("child"),
            None,
        )
        .await;
        put(
            store,
            &repository(&format!("{parent}-sibling")),
            &manifest("sibling"),
            None,
        )
        .await;
        assert!(
            !exists(store, &parent).await,
            "only longer names were stored"
        );
    }

    /// Referrers of a subject: only that subject's, only this repository's, in digest order.
    pub async fn referrers_of_a_subject(store: &dyn MetadataStore) {
        let repo = unique_repository("referrers");
        let subject = manifest("subject");
        let other_subject = manifest("other-subject");
        put(store, &repo, &subject, None).await;
        let mut mine: Vec<ManifestRecord> = (0..4)
            .map(|i| referrer_of(&subject.digest, &format!("r{i}")))
            .collect();
        for record in &mine {
            put(store, &repo, record, None).await;
        }
        put(
            store,
            &repo,
            &referrer_of(&other_subject.digest, "theirs"),
            None,
        )
        .await;
        let elsewhere = unique_repository("referrers-other");
        put(
            store,
            &elsewhere,
            &referrer_of(&subject.digest, "elsewhere"),
            None,
        )
        .await;

        mine.sort_by(|a, b| a.digest.cmp(&b.digest));
        let descriptors = store
            .referrers(&repo, &subject.digest)
            .await
            .unwrap_or_else(|e| panic!("referrers failed: {e}"));
        let expected: Vec<ReferrerDescriptor> = mine
            .iter()
            .map(|record| record.referrer.clone().expect("a referrer").1)
            .collect();
        assert_eq!(
            descriptors, expected,
            "the subject's referrers, in digest order"
        );
        assert_eq!(
            get(store, &repo, &mine[0].digest).await.as_ref(),
            Some(&mine[0]),
            "a referrer reads back with its subject and descriptor"
        );
        let none = referrers(store, &repo, &digest_of("no referrers")).await;
        assert!(none.is_empty(), "a subject without referrers");
        assert_eq!(
            referrers(store, &elsewhere, &subject.digest).await.len(),
            1,
            "other repository"
        );
    }

    /// Blob links: batch lookups answer in order, per repository; unlink reports existence.
    pub async fn blob_links(store: &dyn MetadataStore) {
        let repo = unique_repository("links");
        let other = repository(&format!("{repo}-b"));
        let (a, b, c) = (digest_of("a"), digest_of("b"), digest_of("c"));
        link(store, &repo, &a, 10).await;
        link(store, &repo, &b, 0).await;
        link(store, &other, &c, 30).await;
        let digests = [b.clone(), c.clone(), a.clone()];
        assert_eq!(
            links(store, &repo, &digests).await,
            [Some(0), None, Some(10)]
        );
        assert_eq!(links(store, &other, &digests).await, [None, Some(30), None]);
        assert!(
            links(store, &repo, &[]).await.is_empty(),
            "no digests asked"
        );

        link(store, &repo, &a, 10).await;
        assert_eq!(
            links(store, &repo, std::slice::from_ref(&a)).await,
            [Some(10)],
            "linked twice"
        );
        let unlinked = store.unlink_blob(&repo, &a).await;
        assert!(
            unlinked.unwrap_or_else(|e| panic!("unlink_blob failed: {e}")),
            "it was linked"
        );
        let again = store.unlink_blob(&repo, &a).await;
        assert!(
            !again.unwrap_or_else(|e| panic!("unlink_blob failed: {e}")),
            "already unlinked"
        );
        assert_eq!(
            links(store, &repo, &digests).await,
            [Some(0), None, None],
            "after unlink"
        );
    }

    /// A repository's manifests list whole, in digest order, page by page; its tags list
    /// with the digests they point at. Another repository's items never appear.
    pub async fn manifests_and_tag_targets_page_in_key_order(store: &dyn MetadataStore) {
        let repo = unique_repository("listing");
        let neighbour = repository(&format!("{repo}-b"));
        let subject = manifest("list-subject");
        let mut records = vec![
            subject.clone(),
            manifest("list-one"),
            manifest("list-two"),
            referrer_of(&subject.digest, "list-referrer"),
        ];
        for (index, record) in records.iter().enumerate() {
            put(store, &repo, record, Some(&tag(&format!("t{index}")))).await;
        }
        put(store, &repo, &records[1], Some(&tag("also"))).await;
        put(
            store,
            &neighbour,
            &manifest("list-neighbour"),
            Some(&tag("n")),
        )
        .await;
        let pushed = records.clone();
        records.sort_by(|a, b| a.digest.as_str().cmp(b.digest.as_str()));

        let page = |after: Option<String>, limit: usize| {
            let repo = &repo;
            async move {
                store
                    .manifests_page(repo, after.as_deref(), limit)
                    .await
                    .unwrap_or_else(|e| panic!("manifests_page(after {after:?}) failed: {e}"))
            }
        };
        assert_eq!(page(None, 100).await, records, "one page");
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let next = page(after.clone(), 3).await;
            after = next.last().map(|r| r.digest.to_string());
            let done = next.len() < 3;
            paged.extend(next);
            if done {
                break;
            }
        }
        assert_eq!(paged, records, "pages of three");
        assert!(page(None, 0).await.is_empty(), "limit 0");

        let targets = store
            .tag_targets(&repo, None, 100)
            .await
            .unwrap_or_else(|e| panic!("tag_targets failed: {e}"));
        let expected: Vec<(String, Digest)> =
            [("also", 1), ("t0", 0), ("t1", 1), ("t2", 2), ("t3", 3)]
                .iter()
                .map(|(name, index)| ((*name).to_owned(), pushed[*index].digest.clone()))
                .collect();
        assert_eq!(targets, expected, "tags with their targets");
        let rest = store
            .tag_targets(&repo, Some("t1"), 2)
            .await
            .unwrap_or_else(|e| panic!("tag_targets(after t1) failed: {e}"));
        assert_eq!(rest, expected[3..5], "after t1, two");
    }

    /// Deleting a repository removes its tags, manifests, referrers and blob links, leaves
    /// a repository whose name extends it alone, and is not an error when repeated.
    pub async fn delete_repository_removes_everything_in_it(store: &dyn MetadataStore) {
        let repo = unique_repository("doomed");
        let longer = repository(&format!("{repo}/kept"));
        let subject = manifest("doomed-subject");
        let referrer = referrer_of(&subject.digest, "doomed-referrer");
        let blob = digest_of("doomed-blob");
        for name in [&repo, &longer] {
            put(store, name, &subject, Some(&tag("latest"))).await;
            put(store, name, &referrer, None).await;
            link(store, name, &blob, 5).await;
        }
        let deleted = store.delete_repository(&repo).await;
        assert!(
            deleted.unwrap_or_else(|e| panic!("delete_repository failed: {e}")),
            "it existed"
        );
        assert!(!exists(store, &repo).await, "the repository is gone");
        assert_eq!(get(store, &repo, &subject.digest).await, None, "manifest");
        assert_eq!(tagged(store, &repo, &tag("latest")).await, None, "tag");
        assert!(tags(store, &repo, None, 10).await.is_empty(), "tag listing");
        assert!(
            referrers(store, &repo, &subject.digest).await.is_empty(),
            "referrers"
        );
        assert_eq!(
            links(store, &repo, std::slice::from_ref(&blob)).await,
            [None]
        );
        let again = store.delete_repository(&repo).await;
        assert!(
            !again.unwrap_or_else(|e| panic!("delete_repository failed: {e}")),
            "already deleted"
        );

        assert!(exists(store, &longer).await, "{longer} stays");
        assert_eq!(
            get(store, &longer, &subject.digest).await.as_ref(),
            Some(&subject)
        );
        assert_eq!(referrers(store, &longer, &subject.digest).await.len(), 1);
        assert_eq!(
            links(store, &longer, std::slice::from_ref(&blob)).await,
            [Some(5)]
        );
    }

    /// Sessions are stored whole, updated and removed.
    pub async fn upload_sessions(store: &dyn MetadataStore) {
        let repo = unique_repository("uploads");
        let created = session(&repo);
        let id = created.staged.id.clone();
        assert_eq!(upload(store, &id).await, None, "before create_upload");
        store
            .create_upload(&created)
            .await
            .unwrap_or_else(|e| panic!("create_upload failed: {e}"));
        assert_eq!(
            upload(store, &id).await.as_ref(),
            Some(&created),
            "after create_upload"
        );

        let updated = grown(&created, b"some bytes", b"backend state \x00\xff");
        assert!(
            update(store, &updated, 0).await,
            "update at the stored size"
        );
        assert_eq!(
            upload(store, &id).await.as_ref(),
            Some(&updated),
            "after update_upload"
        );

        store
            .delete_upload(&id)
            .await
            .unwrap_or_else(|e| panic!("delete_upload failed: {e}"));
        assert_eq!(upload(store, &id).await, None, "after delete_upload");
        store
            .delete_upload(&id)
            .await
            .unwrap_or_else(|e| panic!("deleting a deleted session is not an error: {e}"));
        assert!(
            !update(store, &updated, 10).await,
            "updating a deleted session"
        );
        assert_eq!(
            upload(store, &id).await,
            None,
            "a failed update creates nothing"
        );
    }

    /// A stale expected size changes nothing and returns false.
    pub async fn update_upload_is_conditional(store: &dyn MetadataStore) {
        let repo = unique_repository("conditional");
        let created = session(&repo);
        store
            .create_upload(&created)
            .await
            .unwrap_or_else(|e| panic!("create_upload failed: {e}"));
        let first = grown(&created, b"0123456789", b"");
        assert!(update(store, &first, 0).await, "update at the stored size");

        let stale = grown(&created, b"abc", b"stale");
        assert!(!update(store, &stale, 0).await, "update at a stale size");
        assert!(
            !update(store, &stale, 3).await,
            "update at a size never stored"
        );
        assert_eq!(
            upload(store, &created.staged.id).await.as_ref(),
            Some(&first),
            "unchanged"
        );

        let second = grown(&first, b"more", b"");
        assert!(update(store, &second, 10).await, "update at the new size");
        assert_eq!(
            upload(store, &created.staged.id).await.as_ref(),
            Some(&second)
        );
    }

    /// Many requests racing to append at the same offset: exactly one update wins, and the
    /// stored session is the winner's.
    pub async fn racing_upload_updates_have_one_winner(store: &dyn MetadataStore) {
        const RACERS: usize = 16;
        let repo = unique_repository("race");
        let created = session(&repo);
        store
            .create_upload(&created)
            .await
            .unwrap_or_else(|e| panic!("create_upload failed: {e}"));
        let mut base = created;
        for round in 0..3 {
            let candidates: Vec<UploadSession> = (0..RACERS)
                .map(|i| grown(&base, &vec![b'x'; i + 1], format!("racer {i}").as_bytes()))
                .collect();
            let expected_size = base.staged.size;
            let outcomes = join_all(
                candidates
                    .iter()
                    .map(|c| store.update_upload(c, expected_size)),
            )
            .await;
            let winners: Vec<&UploadSession> = outcomes
                .into_iter()
                .zip(&candidates)
                .filter_map(|(outcome, candidate)| {
                    let won =
                        outcome.unwrap_or_else(|e| panic!("racing update_upload failed: {e}"));
                    won.then_some(candidate)
                })
                .collect();
            assert_eq!(
                winners.len(),
                1,
                "round {round}: {} of {RACERS} racers won",
                winners.len()
            );
            let stored = upload(store, &base.staged.id).await;
            assert_eq!(
                stored.as_ref(),
                Some(winners[0]),
                "round {round}: the winner is stored"
            );
            base = winners[0].clone();
        }
    }
}
