//! The registry on S3 (Garage) and DynamoDB (DynamoDB Local) at the HTTP level: two registry
//! instances sharing one bucket and one table, as two Lambda invocations or two `berth serve`
//! processes would, with nothing shared in memory; and errors of the services reaching the
//! client without internal details; and what a manifest GET costs in store requests.
//!
//! Ignored unless the services run; `scripts/test-all.sh` starts them and runs these.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use berth_runtime::{BlobLocation, EventLog, MetadataLocation, Routes, StorageConfig};
use berth_tests::authed::serve_on_loopback;
use berth_tests::aws::AwsSandbox;
use berth_tests::{TestRegistry, chunk_range, content, media, sha256};

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Garage and DynamoDB Local: scripts/test-all.sh"]
async fn racing_patches_on_two_instances_one_wins_the_other_gets_416() {
    let sandbox = AwsSandbox::new().await;
    let first = TestRegistry::start_on(sandbox.storage()).await;
    let second = TestRegistry::start_on(sandbox.storage()).await;
    let location = first.open_session("race/blob").await;

    // Two different bodies for the same range, sent at once to the two instances; large
    // enough (a full part plus a tail) that both are in flight together.
    let mine = content("racer one", 9 * MIB);
    let theirs = content("racer two", 9 * MIB);
    let (a, b) = tokio::join!(
        first.patch_chunk(&location, 0, &mine),
        second.patch_chunk(&location, 0, &theirs),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [202, 416], "one wins, one is refused: {a} / {b}");
    let (winner, loser) = if a.status == 202 {
        (&mine, &b)
    } else {
        (&theirs, &a)
    };
    loser.assert_error(416, "RANGE_INVALID");

    // The session holds the winner's bytes, whichever instance is asked.
    let status = second.get(&location).await;
    status.assert_status(204);
    assert_eq!(
        status.header("range"),
        Some(chunk_range(0, winner.len()).as_str())
    );
    let digest = sha256(winner);
    second
        .close_upload(&location, &digest)
        .await
        .assert_blob_created("race/blob", &digest);
    let redirect = first.get(&format!("/v2/race/blob/blobs/{digest}")).await;
    redirect.assert_status(307);
    let (fetched, bytes) = AwsSandbox::fetch(&redirect.location()).await;
    assert_eq!(fetched, 200);
    assert!(bytes == *winner, "the blob is the winner's bytes");
    assert_eq!(sandbox.keys("blobs/").await, [sandbox.blob_key(&digest)]);
    assert_eq!(sandbox.keys("uploads/").await, Vec::<String>::new());
    sandbox.clear().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Garage and DynamoDB Local: scripts/test-all.sh"]
async fn one_blob_pushed_by_two_sessions_at_once_is_stored_once() {
    let sandbox = AwsSandbox::new().await;
    let first = TestRegistry::start_on(sandbox.storage()).await;
    let second = TestRegistry::start_on(sandbox.storage()).await;
    let bytes = content("the same layer", 12 * MIB);
    let digest = sha256(&bytes);

    let (a, b) = tokio::join!(
        push_in_one_chunk(&first, "one/app", &bytes, &digest),
        push_in_one_chunk(&second, "two/app", &bytes, &digest),
    );
    a.assert_blob_created("one/app", &digest);
    b.assert_blob_created("two/app", &digest);

    for (registry, repo) in [(&first, "one/app"), (&second, "two/app")] {
        let head = registry.head(&format!("/v2/{repo}/blobs/{digest}")).await;
        head.assert_status(200);
        assert_eq!(head.content_length(), bytes.len() as u64);
    }
    assert_eq!(sandbox.keys("blobs/").await, [sandbox.blob_key(&digest)]);
    assert_eq!(sandbox.keys("uploads/").await, Vec::<String>::new());
    let redirect = second.get(&format!("/v2/one/app/blobs/{digest}")).await;
    let (fetched, served) = AwsSandbox::fetch(&redirect.location()).await;
    assert_eq!(fetched, 200);
    assert!(served == bytes, "the one object holds the blob");
    sandbox.clear().await;
}

/// The requests SDK clients send, each as its DynamoDB operation (`X-Amz-Target`) or its S3
/// method and path.
#[derive(Debug, Clone, Default)]
struct Requests(Arc<Mutex<Vec<String>>>);

impl Requests {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().expect("the request list"))
    }
}

impl Intercept for Requests {
    fn name(&self) -> &'static str {
        "Requests"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let operation = match request.headers().get("x-amz-target") {
            Some(target) => target.to_owned(),
            None => format!("S3 {} {}", request.method(), request.uri()),
        };
        self.0.lock().expect("the request list").push(operation);
        Ok(())
    }
}

/// A manifest GET, by tag or by digest, as the pull function serves it (its events only
/// logged), is one DynamoDB read and no S3 request: pulls are recorded from the log lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Garage and DynamoDB Local: scripts/test-all.sh"]
async fn a_manifest_get_is_one_dynamodb_read_and_no_s3_request() {
    let sandbox = AwsSandbox::new().await;
    let pusher = TestRegistry::start_on(sandbox.storage()).await;
    let image = pusher
        .push_seeded_image("calls/app", "v1", "one read")
        .await;

    let requests = Requests::default();
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&shared)
            .interceptor(requests.clone())
            .build(),
    );
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(true)
            .interceptor(requests.clone())
            .build(),
    );
    let mut config = berth_store_s3::S3Config::new(&sandbox.bucket);
    config.prefix = Some(sandbox.prefix.trim_end_matches('/').to_owned());
    config.force_path_style = true;
    let registry = berth_core::Registry::new(
        Arc::new(berth_store_s3::S3BlobStore::new(s3, config).expect("the S3 store")),
        Arc::new(berth_meta_dynamodb::DynamoMetadataStore::new(
            dynamodb,
            &sandbox.table,
        )),
    )
    .with_events(Arc::new(EventLog));
    let router = Routes::new()
        .registry(Arc::new(registry), berth_runtime::Settings::default())
        .build();
    let (addr, _) = serve_on_loopback(router).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a client");
    requests.take();
    // A tag's item holds its manifest; a digest's items (the manifest and any parts) are
    // one query.
    for (reference, read) in [
        ("v1".to_owned(), "DynamoDB_20120810.GetItem"),
        (image.digest(), "DynamoDB_20120810.Query"),
    ] {
        let answer = client
            .get(format!("http://{addr}/v2/calls/app/manifests/{reference}"))
            .header("accept", media::OCI_MANIFEST)
            .send()
            .await
            .expect("the registry answers");
        assert_eq!(answer.status(), 200, "GET of the manifest {reference}");
        assert_eq!(
            answer.bytes().await.expect("the manifest").as_ref(),
            image.manifest.as_slice()
        );
        assert_eq!(
            requests.take(),
            [read],
            "the store requests of a manifest GET by {reference}"
        );
    }
    sandbox.clear().await;
}

/// Opens a session, sends `bytes` in one chunk and closes the session with `digest`.
async fn push_in_one_chunk(
    registry: &TestRegistry,
    repo: &str,
    bytes: &[u8],
    digest: &str,
) -> berth_tests::Reply {
    let location = registry.open_session(repo).await;
    registry
        .patch_chunk(&location, 0, bytes)
        .await
        .assert_status(202);
    registry.close_upload(&location, digest).await
}

/// Every log line of this test binary, for tests that check what was logged.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_writer(move || LogWriter(sink.clone()))
            .with_ansi(false)
            .init();
        logs
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("the log buffer")
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The access-log lines of failed requests for paths that contain `needle`.
fn failures_logged(logs: &Mutex<Vec<u8>>, needle: &str) -> Vec<String> {
    String::from_utf8_lossy(&logs.lock().expect("the log buffer"))
        .lines()
        .filter(|line| line.contains("request failed") && line.contains(needle))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Garage and DynamoDB Local: scripts/test-all.sh"]
async fn service_errors_reach_the_client_without_internal_details() {
    let logs = captured_logs();
    let sandbox = AwsSandbox::new().await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let missing_table = format!("berth-missing-{id}");
    let missing_bucket = format!("berth-missing-{id}");

    // A table that does not exist: DynamoDB refuses every call.
    let mut storage = sandbox.storage();
    storage.metadata = MetadataLocation::DynamoDb {
        table: missing_table.clone(),
    };
    let registry = TestRegistry::start_on(storage).await;
    let repo = format!("table-{id}/app");
    let reply = registry.get(&format!("/v2/{repo}/manifests/latest")).await;
    reply.assert_error(500, "UNKNOWN");
    assert_no_internals(
        &reply.to_string(),
        &[&missing_table, "DynamoDB", "ResourceNotFound", "127.0.0.1"],
    );
    let logged = failures_logged(&logs, &repo);
    assert_eq!(logged.len(), 1, "the failure is logged once: {logged:#?}");
    assert!(
        logged[0].contains("ResourceNotFoundException"),
        "the log line carries the cause: {logged:#?}"
    );

    // A bucket that does not exist: S3 refuses the upload's write.
    let storage = StorageConfig {
        blobs: BlobLocation::S3 {
            bucket: missing_bucket.clone(),
            prefix: None,
        },
        ..sandbox.storage()
    };
    let registry = TestRegistry::start_on(storage).await;
    let repo = format!("bucket-{id}/app");
    let location = registry.open_session(&repo).await;
    let chunk = content("to nowhere", 64 * 1024);
    let reply = registry.patch_chunk(&location, 0, &chunk).await;
    assert!(reply.status >= 500, "a server error: {reply}");
    let code = reply.json()["errors"][0]["code"].clone();
    assert!(code == "UNKNOWN" || code == "UNAVAILABLE", "{reply}");
    assert_no_internals(
        &reply.to_string(),
        &[&missing_bucket, "NoSuchBucket", "127.0.0.1"],
    );
    let logged = failures_logged(&logs, &repo);
    assert_eq!(logged.len(), 1, "the failure is logged once: {logged:#?}");
    assert!(
        logged[0].contains("NoSuchBucket") && logged[0].contains(&missing_bucket),
        "the log line carries the cause: {logged:#?}"
    );
    // Nothing moved: the session is still at its start.
    registry
        .get(&location)
        .await
        .assert_upload_state(204, &repo, "0-0");
    sandbox.clear().await;
}

fn assert_no_internals(reply: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !reply.contains(secret),
            "the reply reveals {secret:?}: {reply}"
        );
    }
}
