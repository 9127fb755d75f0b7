//! The blob store conformance suite and the S3 store's own cases, against a real S3 server.
//!
//! The `#[ignore]`d tests need one. `scripts/services/garage.sh` runs Garage and prints the
//! environment they read (`AWS_*` credentials, region and `AWS_ENDPOINT_URL_S3`, and the
//! bucket in `BERTH_TEST_S3_BUCKET`):
//!
//! ```sh
//! scripts/services/garage.sh install
//! eval "$(scripts/services/garage.sh start target/garage)"
//! cargo test -p berth-store-s3 -- --include-ignored
//! scripts/services/garage.sh stop target/garage
//! ```
//!
//! Each test works under a prefix of its own, new on every run, and removes it when it passes.

use std::io;
use std::time::Duration;

use aws_sdk_s3::Client;
use berth_core::ports::{BlobStore, ByteStream, StagedUpload};
use berth_core::{Algorithm, Digest, ErrorCode, UploadId};
use berth_store_s3::{S3BlobStore, S3Config};
use bytes::Bytes;
use futures_util::StreamExt;

const MIB: usize = 1024 * 1024;
const PART: usize = 8 * MIB;

/// A test's corner of the bucket, with a client of its own to look behind the store's back.
struct Sandbox {
    client: Client,
    bucket: String,
    prefix: String,
}

impl Sandbox {
    async fn new() -> Self {
        let bucket = std::env::var("BERTH_TEST_S3_BUCKET").expect(
            "BERTH_TEST_S3_BUCKET and AWS_* name the S3 server: \
             eval \"$(scripts/services/garage.sh start DIR)\"",
        );
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(true)
            .build();
        let prefix = format!("test-{}/", uuid::Uuid::new_v4().simple());
        Self {
            client: Client::from_conf(config),
            bucket,
            prefix,
        }
    }

    fn config(&self) -> S3Config {
        S3Config {
            prefix: Some(self.prefix.clone()),
            force_path_style: true,
            ..S3Config::new(&self.bucket)
        }
    }

    fn store(&self) -> S3BlobStore {
        S3BlobStore::new(self.client.clone(), self.config()).expect("a store")
    }

    fn blob_key(&self, digest: &Digest) -> String {
        let hex = digest.hex();
        format!(
            "{}blobs/{}/{}/{hex}",
            self.prefix,
            digest.algorithm().as_str(),
            &hex[..2]
        )
    }

    fn upload_prefix(&self, id: &UploadId) -> String {
        format!("{}uploads/{id}/", self.prefix)
    }

    /// Every key under `prefix`, sorted.
    async fn keys(&self, prefix: &str) -> Vec<String> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.expect("listing objects");
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        keys.sort();
        keys
    }

    /// Removes everything the test left.
    async fn clear(self) {
        for key in self.keys(&self.prefix).await {
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .expect("deleting a test object");
        }
    }
}

/// Bytes that differ from run to run and are not periodic at any power of two.
fn pattern(len: usize) -> Vec<u8> {
    let seed = uuid::Uuid::new_v4();
    let mut bytes: Vec<u8> = seed.as_bytes().iter().copied().take(len).collect();
    bytes.extend((bytes.len()..len).map(|i| (i % 251) as u8 ^ (i / 251 % 253) as u8));
    bytes
}

fn body(chunks: impl IntoIterator<Item = Vec<u8>>) -> ByteStream {
    let chunks: Vec<io::Result<Bytes>> = chunks.into_iter().map(|c| Ok(Bytes::from(c))).collect();
    Box::pin(futures_util::stream::iter(chunks))
}

async fn begin(store: &S3BlobStore) -> StagedUpload {
    let id = UploadId::generate();
    let backend = store.begin_upload(&id).await.expect("begin_upload");
    StagedUpload {
        id,
        size: 0,
        backend,
    }
}

async fn append(store: &S3BlobStore, staged: &StagedUpload, chunks: Vec<Vec<u8>>) -> StagedUpload {
    let expected: u64 = chunks.iter().map(|c| c.len() as u64).sum();
    let (written, backend) = store
        .append(staged, body(chunks))
        .await
        .unwrap_or_else(|e| panic!("append at {}: {e} ({:?})", staged.size, e.cause()));
    assert_eq!(written, expected);
    StagedUpload {
        size: staged.size + written,
        backend,
        id: staged.id.clone(),
    }
}

async fn collect(stream: ByteStream) -> Vec<u8> {
    let mut stream = stream;
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.expect("a chunk"));
    }
    bytes
}

async fn staged_bytes(store: &S3BlobStore, staged: &StagedUpload) -> Vec<u8> {
    collect(store.read_staged(staged).await.expect("read_staged")).await
}

async fn blob_bytes(store: &S3BlobStore, digest: &Digest) -> Vec<u8> {
    collect(store.read(digest, None).await.expect("read")).await
}

/// Compares without printing megabytes.
#[track_caller]
fn assert_same(actual: &[u8], expected: &[u8], what: &str) {
    if actual != expected {
        let first = actual
            .iter()
            .zip(expected)
            .position(|(a, e)| a != e)
            .unwrap_or(actual.len().min(expected.len()));
        panic!(
            "{what}: {} bytes, expected {}; first difference at {first}",
            actual.len(),
            expected.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an S3 server: scripts/test-all.sh starts Garage"]
async fn s3_blob_store_conforms() {
    let sandbox = Sandbox::new().await;
    let store = sandbox.store();
    berth_core::conformance::run_all_blob_store(&store).await;
    let staging = sandbox.keys(&format!("{}uploads/", sandbox.prefix)).await;
    assert!(staging.is_empty(), "staging left behind: {staging:?}");
    sandbox.clear().await;
}

/// 20 MiB in chunks of uneven sizes, one of them longer than a part: several parts and a
/// tail, staged and published exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an S3 server: scripts/test-all.sh starts Garage"]
async fn twenty_mib_in_uneven_chunks() {
    let sandbox = Sandbox::new().await;
    let store = sandbox.store();
    let bytes = pattern(20 * MIB + 12_345);
    let mut chunks = Vec::new();
    let mut rest = &bytes[..];
    for size in [1, 4096, 1_000_003, 9 * MIB + 5, 17, 65_537]
        .into_iter()
        .cycle()
    {
        if rest.is_empty() {
            break;
        }
        let (chunk, after) = rest.split_at(size.min(rest.len()));
        chunks.push(chunk.to_vec());
        rest = after;
    }

    let staged = append(&store, &begin(&store).await, chunks).await;
    let staging = sandbox.keys(&sandbox.upload_prefix(&staged.id)).await;
    let parts = staging.iter().filter(|k| k.contains("/part-")).count();
    let tails = staging.iter().filter(|k| k.contains("/tail-")).count();
    assert_eq!(
        (parts, tails),
        (2, 1),
        "two full parts and a tail: {staging:?}"
    );
    assert_same(&staged_bytes(&store, &staged).await, &bytes, "staged bytes");

    let digest = Digest::of(Algorithm::Sha256, &bytes);
    store.commit(&staged, &digest).await.expect("commit");
    assert_eq!(
        store.stat(&digest).await.expect("stat"),
        Some(bytes.len() as u64)
    );
    assert_same(&blob_bytes(&store, &digest).await, &bytes, "published blob");
    let ranged = collect(
        store
            .read(&digest, Some(PART as u64 - 3..PART as u64 + 3))
            .await
            .expect("ranged read"),
    )
    .await;
    assert_same(
        &ranged,
        &bytes[PART - 3..PART + 3],
        "a range across a part boundary",
    );
    assert!(
        sandbox
            .keys(&sandbox.upload_prefix(&staged.id))
            .await
            .is_empty()
    );
    sandbox.clear().await;
}

/// Appends each below S3's 5 MiB part minimum, which together cross several part boundaries,
/// as a chunking client behind API Gateway sends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an S3 server: scripts/test-all.sh starts Garage"]
async fn small_appends_cross_part_boundaries() {
    let sandbox = Sandbox::new().await;
    let store = sandbox.store();
    let bytes = pattern(30 * MIB + 77);
    let mut staged = begin(&store).await;
    for chunk in bytes.chunks(3 * MIB + 1001) {
        // A body of several network-sized chunks.
        let pieces = chunk.chunks(64 * 1024 + 3).map(<[u8]>::to_vec).collect();
        staged = append(&store, &staged, pieces).await;
        let expected = &bytes[..staged.size as usize];
        assert_same(
            &staged_bytes(&store, &staged).await,
            expected,
            &format!("staged after {} bytes", staged.size),
        );
    }
    assert_eq!(staged.size, bytes.len() as u64);

    let staging = sandbox.keys(&sandbox.upload_prefix(&staged.id)).await;
    let parts = staging.iter().filter(|k| k.contains("/part-")).count();
    let tails = staging.iter().filter(|k| k.contains("/tail-")).count();
    assert_eq!(parts, 3, "{staging:?}");
    assert!(
        (1..=2).contains(&tails),
        "the tail, and at most the one it replaced: {staging:?}"
    );

    let digest = Digest::of(Algorithm::Sha256, &bytes);
    store.commit(&staged, &digest).await.expect("commit");
    assert_same(&blob_bytes(&store, &digest).await, &bytes, "published blob");
    sandbox.clear().await;
}

/// Blobs of exactly one and exactly two parts: no tail to carry or assemble.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an S3 server: scripts/test-all.sh starts Garage"]
async fn blobs_of_whole_parts() {
    let sandbox = Sandbox::new().await;
    let store = sandbox.store();
    for parts in [1, 2] {
        let bytes = pattern(parts * PART);
        let half = bytes.len() / 2;
        let staged = append(&store, &begin(&store).await, vec![bytes[..half].to_vec()]).await;
        let staged = append(&store, &staged, vec![bytes[half..].to_vec()]).await;
        let digest = Digest::of(Algorithm::Sha256, &bytes);
        store.commit(&staged, &digest).await.expect("commit");
        assert_eq!(
            store.stat(&digest).await.expect("stat"),
            Some(bytes.len() as u64)
        );
        assert_same(&blob_bytes(&store, &digest).await, &bytes, "published blob");
    }
    sandbox.clear().await;
}

/// An append dropped mid-body (the client stalled, the request timed out) changes nothing:
/// the next append at the same size works and nothing of the dropped one shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an S3 server: scripts/test-all.sh starts Garage"]
async fn a_dropped_append_changes_nothing() {
    let sandbox = Sandbox::new().await;
    let store = sandbox.store();
    let start = pattern(MIB);
    let staged = append(&store, &begin(&store).await, vec![start.clone()]).await;

    // Two parts' worth, then silence until the request is dropped.
    let stalled: ByteStream = Box::pin(
        futures_util::stream::iter(vec![Ok(Bytes::from(pattern(2 * PART)))])
            .chain(futures_util::stream::pending()),
    );
    let dropped = tokio::time::timeout(Duration::from_secs(2), store.append(&staged, stalled));
    assert!(dropped.await.is_err(), "the stalled append was cut off");

    let more = pattern(PART);
    let grown = append(&store, &staged, vec![more.clone()]).await;
    let expected = [&start[..], &more[..]].concat();
    assert_same(
        &staged_bytes(&store, &grown).await,
        &expected,
        "staged bytes",
    );
    let digest = Digest::of(Algorithm::Sha256, &expected);
    store.commit(&grown, &digest).await.expect("commit");
    assert_same(
        &blob_bytes(&store, &digest).await,
        &expected,
        "published blob",
    );
    sandbox.clear().await;
}

/// Two appends racing from the same staged state (a tail and a part) write different bytes:
/// each result reads back its own bytes, so whichever wins the session update is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an S3 server: scripts/test-all.sh starts Garage"]
async fn racing_appends_leave_each_other_intact() {
    let sandbox = Sandbox::new().await;
    let store = sandbox.store();
    let start = pattern(PART + MIB);
    let staged = append(&store, &begin(&store).await, vec![start.clone()]).await;
    let (ours, theirs) = (pattern(PART + 5), pattern(PART + 9));
    let (a, b) = futures_util::join!(
        store.append(&staged, body([ours.clone()])),
        store.append(&staged, body([theirs.clone()])),
    );
    for ((written, backend), appended) in [(a.expect("a"), &ours), (b.expect("b"), &theirs)] {
        let grown = StagedUpload {
            size: staged.size + written,
            backend,
            id: staged.id.clone(),
        };
        let expected = [&start[..], appended].concat();
        assert_same(&staged_bytes(&store, &grown).await, &expected, "racer");
    }
    assert_same(
        &staged_bytes(&store, &staged).await,
        &start,
        "the state before the race",
    );

    let winner = append(&store, &staged, vec![ours.clone()]).await;
    let expected = [&start[..], &ours[..]].concat();
    let digest = Digest::of(Algorithm::Sha256, &expected);
    store.commit(&winner, &digest).await.expect("commit");
    assert_same(
        &blob_bytes(&store, &digest).await,
        &expected,
        "published blob",
    );
    sandbox.clear().await;
}

/// A presigned URL serves the blob to a plain HTTP client, ranges included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an S3 server: scripts/test-all.sh starts Garage"]
async fn presigned_urls_serve_bytes_and_ranges() {
    let sandbox = Sandbox::new().await;
    let store = sandbox.store();
    let bytes = pattern(MIB + 3);
    let staged = append(&store, &begin(&store).await, vec![bytes.clone()]).await;
    let digest = Digest::of(Algorithm::Sha256, &bytes);
    store.commit(&staged, &digest).await.expect("commit");

    let url = store
        .redirect_url(&digest)
        .await
        .expect("redirect_url")
        .expect("redirects are on by default");
    let http = reqwest::Client::new();
    let whole = http.get(&url).send().await.expect("GET");
    assert_eq!(whole.status(), 200);
    assert_same(
        &whole.bytes().await.expect("body"),
        &bytes,
        "GET of the URL",
    );

    let ranged = http
        .get(&url)
        .header("Range", "bytes=1000-1999")
        .send()
        .await
        .expect("ranged GET");
    assert_eq!(ranged.status(), 206);
    assert_same(
        &ranged.bytes().await.expect("body"),
        &bytes[1000..2000],
        "ranged GET of the URL",
    );

    let tampered = url.replacen(digest.hex(), &"0".repeat(64), 1);
    let refused = http.get(&tampered).send().await.expect("GET");
    assert_eq!(refused.status(), 403, "the signature covers the key");

    let streaming = S3BlobStore::new(
        sandbox.client.clone(),
        S3Config {
            redirect: false,
            ..sandbox.config()
        },
    )
    .expect("a store");
    assert_eq!(
        streaming.redirect_url(&digest).await.expect("redirect_url"),
        None
    );
    sandbox.clear().await;
}

/// Committing a blob that exists drops the new staging and leaves one object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an S3 server: scripts/test-all.sh starts Garage"]
async fn committing_an_existing_blob_leaves_one_object() {
    let sandbox = Sandbox::new().await;
    let store = sandbox.store();
    let bytes = pattern(PART + 100);
    let digest = Digest::of(Algorithm::Sha256, &bytes);
    let first = append(&store, &begin(&store).await, vec![bytes.clone()]).await;
    store.commit(&first, &digest).await.expect("first commit");
    let second = append(&store, &begin(&store).await, vec![bytes.clone()]).await;
    assert!(
        !sandbox
            .keys(&sandbox.upload_prefix(&second.id))
            .await
            .is_empty()
    );
    store.commit(&second, &digest).await.expect("second commit");

    let blobs = sandbox.keys(&format!("{}blobs/", sandbox.prefix)).await;
    assert_eq!(blobs, [sandbox.blob_key(&digest)]);
    let staging = sandbox.keys(&format!("{}uploads/", sandbox.prefix)).await;
    assert!(staging.is_empty(), "{staging:?}");
    assert_same(&blob_bytes(&store, &digest).await, &bytes, "the blob");
    sandbox.clear().await;
}

/// Abort removes every staging object, and is idempotent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an S3 server: scripts/test-all.sh starts Garage"]
async fn abort_removes_staging() {
    let sandbox = Sandbox::new().await;
    let store = sandbox.store();
    let staged = append(&store, &begin(&store).await, vec![pattern(PART + MIB)]).await;
    let staged = append(&store, &staged, vec![pattern(10)]).await;
    let prefix = sandbox.upload_prefix(&staged.id);
    assert_eq!(
        sandbox.keys(&prefix).await.len(),
        3,
        "a part, a tail, a stale tail"
    );
    store.abort(&staged).await.expect("abort");
    assert!(sandbox.keys(&prefix).await.is_empty());
    store.abort(&staged).await.expect("abort again");

    // The session still names the staged objects, but they are gone.
    let appended = store.append(&staged, body([b"more".to_vec()])).await;
    assert_eq!(
        appended.expect_err("append after abort").code(),
        ErrorCode::BlobUploadUnknown
    );
    let digest = Digest::of(Algorithm::Sha256, b"never");
    let committed = store.commit(&staged, &digest).await;
    assert_eq!(
        committed.expect_err("commit after abort").code(),
        ErrorCode::BlobUploadUnknown
    );
    assert_eq!(store.stat(&digest).await.expect("stat"), None);
    sandbox.clear().await;
}

/// A client with made-up credentials pointing at a closed port: nothing listens, and no
/// test server is needed.
fn unreachable_client() -> Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("garage"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "AKIDEXAMPLE",
            "not-a-secret",
            None,
            None,
            "test",
        ))
        .endpoint_url("http://127.0.0.1:1")
        .force_path_style(true)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(config)
}

#[tokio::test]
async fn an_unreachable_server_is_a_retryable_outage() {
    let store = S3BlobStore::new(unreachable_client(), S3Config::new("bucket")).expect("a store");
    let digest = Digest::of(Algorithm::Sha256, b"x");
    let error = store.stat(&digest).await.expect_err("nothing listens");
    assert_eq!(error.code(), ErrorCode::Unavailable, "{error}");
    let body = error.to_body().to_string();
    assert!(
        !body.contains("127.0.0.1") && !body.contains("bucket"),
        "{body}"
    );
    let read = store.read(&digest, None).await.map(|_| ());
    assert_eq!(read.expect_err("read").code(), ErrorCode::Unavailable);
}

#[tokio::test]
async fn presigning_needs_no_request() {
    let config = S3Config {
        prefix: Some("reg".into()),
        presign_expiry: Duration::from_secs(300),
        ..S3Config::new("bucket")
    };
    let store = S3BlobStore::new(unreachable_client(), config).expect("a store");
    let digest = Digest::of(Algorithm::Sha256, b"x");
    let url = store
        .redirect_url(&digest)
        .await
        .expect("presigning is local")
        .expect("redirects are on");
    let key = format!(
        "/bucket/reg/blobs/sha256/{}/{}",
        &digest.hex()[..2],
        digest.hex()
    );
    assert!(
        url.starts_with(&format!("http://127.0.0.1:1{key}?")),
        "{url}"
    );
    assert!(url.contains("X-Amz-Expires=300"), "{url}");
    assert!(url.contains("X-Amz-Signature="), "{url}");
}

#[tokio::test]
async fn unknown_uploads_are_reported_as_such() {
    let store = S3BlobStore::new(unreachable_client(), S3Config::new("bucket")).expect("a store");
    let staged = StagedUpload {
        id: UploadId::generate(),
        size: 0,
        backend: Vec::new(),
    };
    let appended = store.append(&staged, body([b"x".to_vec()])).await;
    assert_eq!(
        appended.expect_err("append").code(),
        ErrorCode::BlobUploadUnknown
    );
    let read = store.read_staged(&staged).await.map(|_| ());
    assert_eq!(
        read.expect_err("read_staged").code(),
        ErrorCode::BlobUploadUnknown
    );
    let digest = Digest::of(Algorithm::Sha256, b"");
    let committed = store.commit(&staged, &digest).await;
    assert_eq!(
        committed.expect_err("commit").code(),
        ErrorCode::BlobUploadUnknown
    );

    // A state that does not add up to the session's size is never trusted.
    let begun = store.begin_upload(&staged.id).await.expect("begin_upload");
    let claims_more = StagedUpload {
        size: 10,
        backend: begun,
        ..staged
    };
    let read = store.read_staged(&claims_more).await.map(|_| ());
    assert_eq!(read.expect_err("read_staged").code(), ErrorCode::Unknown);
    let committed = store.commit(&claims_more, &digest).await;
    assert_eq!(committed.expect_err("commit").code(), ErrorCode::Unknown);
}
