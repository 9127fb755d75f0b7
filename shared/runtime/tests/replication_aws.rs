//! Replication as the events function runs it in AWS, against real services: S3 on Garage,
//! the table on DynamoDB Local, SQS and KMS on moto, and CNCF Distribution
//! (`/usr/bin/docker-registry`) as the remote registry. `scripts/test-all.sh` runs these with
//! `--include-ignored`; by hand:
//!
//! ```sh
//! eval "$(scripts/services/dynamodb-local.sh start /tmp/berth-ddb)"
//! eval "$(scripts/services/garage.sh start /tmp/berth-garage)"
//! eval "$(scripts/services/moto.sh start /tmp/berth-moto)"
//! cargo test -p berth-runtime --features lambda,aws-replication --test replication_aws \
//!   -- --include-ignored
//! ```
//!
//! The events handler gets the events Lambda would hand it: a DynamoDB stream record of the
//! tag item the push wrote, the SQS message the replicator queued, an EventBridge scheduled
//! event.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use berth_core::replication::TaskStatus;
use berth_core::{Algorithm, Digest, Reference, RepositoryName};
use berth_replication::engine::{DeadLetters as _, Job};
use berth_runtime::events::EventsHandler;
use berth_runtime::lambda::{AwsReplication, ReplicationConfig};
use berth_runtime::{BlobLocation, MetadataLocation, S3Options, StorageConfig, Stores};
use bytes::Bytes;
use serde_json::{Value, json};
use tower::ServiceExt as _;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn variable(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the services of scripts/services and eval their exports")
    })
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// A replication queue with its dead-letter queue, and a KMS key, in moto.
struct AwsResources {
    sqs: aws_sdk_sqs::Client,
    config: ReplicationConfig,
}

impl AwsResources {
    async fn create() -> Self {
        let sdk = sdk_config().await;
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let kms = aws_sdk_kms::Client::new(&sdk);
        let dlq_url = sqs
            .create_queue()
            .queue_name(unique("berth-replication-dlq"))
            .send()
            .await
            .expect("the dead-letter queue is created")
            .queue_url
            .expect("a queue URL");
        let dlq_arn = sqs
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("the dead-letter queue's attributes")
            .attributes
            .and_then(|mut attributes| attributes.remove(&QueueAttributeName::QueueArn))
            .expect("an ARN");
        let redrive = json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5" }).to_string();
        let queue_url = sqs
            .create_queue()
            .queue_name(unique("berth-replication"))
            .attributes(QueueAttributeName::RedrivePolicy, redrive)
            .send()
            .await
            .expect("the queue is created")
            .queue_url
            .expect("a queue URL");
        let key = kms
            .create_key()
            .description("berth replication test")
            .send()
            .await
            .expect("a KMS key")
            .key_metadata
            .expect("its metadata")
            .key_id;
        Self {
            sqs,
            config: ReplicationConfig {
                queue_url,
                dead_letter_queue_url: Some(dlq_url),
                kms_key: key,
            },
        }
    }

    /// The messages now on the replication queue, received (so hidden for a while) as
    /// Lambda's SQS event source receives them.
    async fn receive(&self) -> Vec<aws_sdk_sqs::types::Message> {
        self.sqs
            .receive_message()
            .queue_url(&self.config.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("received")
            .messages
            .unwrap_or_default()
    }
}

/// The SQS event Lambda hands the function for `messages`.
fn sqs_event(messages: &[(String, String)]) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|(id, body)| {
            json!({
                "messageId": id,
                "receiptHandle": format!("handle-{id}"),
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1764140000000",
                    "SenderId": "AROAEXAMPLE:berth-token",
                    "ApproximateFirstReceiveTimestamp": "1764140000100"
                },
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:berth-replication",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    json!({ "Records": records })
}

/// The stream event of one tag item written by a push (view NEW_AND_OLD_IMAGES).
fn tag_inserted(repository: &str, tag: &str, digest: &str, sequence: &str) -> Value {
    json!({ "Records": [{
        "eventID": "1",
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": 1_764_140_000,
            "Keys": { "PK": { "S": format!("REPO#{repository}") }, "SK": { "S": format!("TAG#{tag}") } },
            "NewImage": {
                "PK": { "S": format!("REPO#{repository}") },
                "SK": { "S": format!("TAG#{tag}") },
                "digest": { "S": digest },
                "media_type": { "S": OCI_MANIFEST },
                "size": { "N": "400" }
            },
            "SequenceNumber": sequence,
            "SizeBytes": 200,
            "StreamViewType": "NEW_AND_OLD_IMAGES"
        },
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/berth/stream/2026-11-26T06:00:00.000"
    }]})
}

fn scheduled_event() -> Value {
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-11-26T06:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/berth-replication-schedule"],
        "detail": {}
    })
}

/// Storage on Garage and a new table of DynamoDB Local.
async fn storage() -> StorageConfig {
    let storage = StorageConfig {
        data_dir: PathBuf::new(),
        blobs: BlobLocation::S3 {
            bucket: variable("BERTH_TEST_S3_BUCKET"),
            prefix: Some(unique("replication")),
        },
        metadata: MetadataLocation::DynamoDb {
            table: unique("berth-replication"),
        },
        s3: S3Options {
            force_path_style: true,
            ..S3Options::default()
        },
    };
    storage.init().await.expect("the table is created");
    storage
}

/// Berth's replication over new storage and new queues, as the events function builds it.
struct Deployment {
    aws: AwsResources,
    stores: Stores,
    replication: AwsReplication,
    handler: EventsHandler,
}

impl Deployment {
    async fn start() -> Self {
        let aws = AwsResources::create().await;
        let (stores, replication) = AwsReplication::open(&storage().await, &aws.config)
            .await
            .expect("replication opens");
        let handler = EventsHandler::new(replication.replicator.clone());
        Self {
            aws,
            stores,
            replication,
            handler,
        }
    }

    /// A request to the replication API (as the token function serves it, here without
    /// authentication).
    async fn api(&self, method: &str, path: &str, body: Value) -> (u16, Value, Option<String>) {
        let router =
            berth_http::replication::replication_router(Arc::new(self.replication.api(None)));
        let request = http_request(method, path, body);
        let response = router.oneshot(request).await.expect("an answer");
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let bytes = axum_body_bytes(response).await;
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, json, location)
    }

    /// Creates with the API, returning the new id from `Location`.
    async fn create(&self, path: &str, body: Value) -> u64 {
        let (status, answer, location) = self.api("POST", path, body).await;
        assert_eq!(status, 201, "{path}: {answer}");
        location
            .and_then(|l| l.rsplit('/').next().and_then(|id| id.parse().ok()))
            .expect("a Location ending in the id")
    }

    /// Pushes a one-layer OCI image whose content derives from `seed`; returns its digest.
    async fn push(&self, repository: &str, tag: &str, seed: &str) -> String {
        let registry = self.stores.registry();
        let repository: RepositoryName = repository.parse().expect("a repository name");
        let config = json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "seed": seed})
            .to_string()
            .into_bytes();
        let layer = format!("layer of {seed}").repeat(50).into_bytes();
        for blob in [&config, &layer] {
            let digest = Digest::of(Algorithm::Sha256, blob);
            let body: berth_core::ports::ByteStream = Box::pin(futures_util::stream::iter([Ok(
                Bytes::copy_from_slice(blob),
            )]));
            registry
                .upload_whole(
                    &berth_core::RequestContext::system("test-setup", "seed"),
                    &repository,
                    &digest,
                    body,
                )
                .await
                .expect("the blob is pushed");
        }
        let descriptor = |media_type: &str, bytes: &[u8]| json!({"mediaType": media_type, "digest": Digest::of(Algorithm::Sha256, bytes).as_str(), "size": bytes.len()});
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &layer)],
        })
        .to_string();
        let reference: Reference = tag.parse().expect("a tag");
        registry
            .put_manifest(
                &berth_core::RequestContext::system("test-setup", "seed"),
                &repository,
                &reference,
                Some(OCI_MANIFEST),
                Bytes::from(manifest),
            )
            .await
            .expect("the manifest is pushed")
            .digest
            .to_string()
    }
}

fn http_request(method: &str, path: &str, body: Value) -> axum::extract::Request {
    axum::http::Request::builder()
        .method(method)
        .uri(format!("/api/v2.0{path}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .expect("a request")
}

async fn axum_body_bytes(response: axum::response::Response) -> Bytes {
    axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("the body")
}

/// CNCF Distribution on a loopback port, killed when dropped: the remote registry.
struct Distribution {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Distribution {
    const BINARY: &str = "/usr/bin/docker-registry";

    async fn start() -> Self {
        assert!(
            Path::new(Self::BINARY).exists(),
            "{} is missing: install the Debian package docker-registry",
            Self::BINARY
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().expect("a directory");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("storage").display()
            ),
        )
        .expect("the configuration is written");
        let child = Command::new(Self::BINARY)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry starts");
        let registry = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let client = client();
        for _ in 0..300 {
            let answer = client.get(format!("{}/v2/", registry.url)).send().await;
            if answer.is_ok_and(|response| response.status().is_success()) {
                return registry;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("docker-registry did not answer within 30 s");
    }

    /// The digest the remote serves for `repository:tag`, if any.
    async fn digest(&self, repository: &str, tag: &str) -> Option<String> {
        let response = client()
            .head(format!("{}/v2/{repository}/manifests/{tag}", self.url))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .expect("an answer");
        response.status().is_success().then(|| {
            response
                .headers()
                .get("docker-content-digest")
                .and_then(|value| value.to_str().ok())
                .expect("a digest")
                .to_owned()
        })
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("a client")
}

#[tokio::test]
#[ignore = "needs DynamoDB Local, Garage, moto and docker-registry: scripts/services"]
async fn a_pushed_tag_travels_from_the_stream_through_the_queue_to_the_remote() {
    let remote = Distribution::start().await;
    let berth = Deployment::start().await;
    // A credential makes the API seal it with KMS and the task open it again.
    let endpoint = berth
        .create(
            "/registries",
            json!({
                "name": "distribution",
                "url": remote.url,
                "type": "docker-registry",
                "credential": {"type": "basic", "access_key": "robot", "access_secret": "s3cret-of-the-remote"}
            }),
        )
        .await;
    let stored = berth
        .replication
        .replicator
        .store()
        .registry(endpoint)
        .await
        .expect("read")
        .expect("stored");
    let sealed = stored.credential.expect("a credential").sealed_secret;
    assert!(
        !String::from_utf8_lossy(&sealed).contains("s3cret-of-the-remote"),
        "the store holds the secret sealed"
    );
    berth
        .create(
            "/replication/policies",
            json!({
                "name": "to-distribution",
                "dest_registry": {"id": endpoint},
                "filters": [{"type": "name", "value": "library/**"}],
                "trigger": {"type": "event_based"},
                "enabled": true
            }),
        )
        .await;

    let digest = berth.push("library/app", "v1", "stream").await;
    let answer = berth
        .handler
        .handle(&tag_inserted("library/app", "v1", &digest, "100"))
        .await
        .expect("a stream batch");
    assert_eq!(answer, json!({ "batchItemFailures": [] }));

    let messages = berth.aws.receive().await;
    assert_eq!(messages.len(), 1, "one task was queued: {messages:?}");
    let body = messages[0].body().expect("a body").to_owned();
    let Job::Task { execution, task } = serde_json::from_str(&body).expect("a job") else {
        panic!("not a task: {body}");
    };
    assert_eq!(remote.digest("library/app", "v1").await, None);

    let id = messages[0].message_id().expect("an id").to_owned();
    let answer = berth
        .handler
        .handle(&sqs_event(&[(id, body)]))
        .await
        .expect("an SQS batch");
    assert_eq!(answer, json!({ "batchItemFailures": [] }));
    assert_eq!(
        remote.digest("library/app", "v1").await.as_deref(),
        Some(digest.as_str()),
        "the image arrived with its digest"
    );
    let task = berth
        .replication
        .replicator
        .store()
        .task(execution, task)
        .await
        .expect("read")
        .expect("the task");
    assert_eq!(task.status, TaskStatus::Succeeded);

    // Records of other items start nothing.
    let mut other = tag_inserted("library/app", "v1", &digest, "101");
    other["Records"][0]["dynamodb"]["Keys"]["SK"] = json!({ "S": format!("BLOB#{digest}") });
    assert_eq!(
        berth.handler.handle(&other).await.expect("a stream batch"),
        json!({ "batchItemFailures": [] })
    );
    assert!(
        berth.aws.receive().await.is_empty(),
        "nothing more was queued"
    );
}

#[tokio::test]
#[ignore = "needs DynamoDB Local, Garage, moto and docker-registry: scripts/services"]
async fn a_schedule_delivered_twice_starts_one_execution() {
    let berth = Deployment::start().await;
    let endpoint = berth
        .create(
            "/registries",
            json!({"name": "nowhere", "url": "http://127.0.0.1:9", "type": "docker-registry"}),
        )
        .await;
    let policy = berth
        .create(
            "/replication/policies",
            json!({
                "name": "every-minute",
                "dest_registry": {"id": endpoint},
                "trigger": {"type": "scheduled", "trigger_settings": {"cron": "0 * * * * *"}},
                "enabled": true
            }),
        )
        .await;
    // Both deliveries must see the same last minute.
    let second = berth_replication::engine::unix_now() % 60;
    if second >= 55 {
        tokio::time::sleep(Duration::from_secs(61 - second)).await;
    }
    let first = berth
        .handler
        .handle(&scheduled_event())
        .await
        .expect("a schedule");
    let started = first["started"].as_array().expect("a list").clone();
    assert_eq!(started.len(), 1, "{first}");
    let again = berth
        .handler
        .handle(&scheduled_event())
        .await
        .expect("a schedule");
    assert_eq!(again, json!({ "started": [] }));

    let executions = berth
        .replication
        .replicator
        .store()
        .executions(Some(policy), 10)
        .await
        .expect("listed");
    assert_eq!(executions.len(), 1);
    let messages = berth.aws.receive().await;
    let jobs: Vec<Job> = messages
        .iter()
        .map(|m| serde_json::from_str(m.body().expect("a body")).expect("a job"))
        .collect();
    assert_eq!(
        jobs,
        [Job::Plan {
            execution: executions[0].id
        }]
    );
}

#[tokio::test]
#[ignore = "needs DynamoDB Local, Garage, moto and docker-registry: scripts/services"]
async fn failures_are_reported_per_item_and_dead_letters_listed() {
    let aws = AwsResources::create().await;
    // A table that does not exist: every job fails as if DynamoDB were unreachable.
    let mut storage = storage().await;
    storage.metadata = MetadataLocation::DynamoDb {
        table: unique("missing"),
    };
    let (_, replication) = AwsReplication::open(&storage, &aws.config)
        .await
        .expect("opens without a request");
    let handler = EventsHandler::new(replication.replicator.clone());

    let plan = serde_json::to_string(&Job::Plan { execution: 1 }).expect("JSON");
    let answer = handler
        .handle(&sqs_event(&[
            ("m-1".into(), plan),
            ("m-2".into(), "not a job".into()),
        ]))
        .await
        .expect("an SQS batch");
    assert_eq!(
        answer,
        json!({ "batchItemFailures": [{ "itemIdentifier": "m-1" }, { "itemIdentifier": "m-2" }] })
    );

    let digest = Digest::of(Algorithm::Sha256, b"x").to_string();
    let answer = handler
        .handle(&tag_inserted("library/app", "v1", &digest, "4242"))
        .await
        .expect("a stream batch");
    assert_eq!(
        answer,
        json!({ "batchItemFailures": [{ "itemIdentifier": "4242" }] })
    );
    handler
        .handle(&scheduled_event())
        .await
        .expect_err("the schedule cannot be read");
    handler
        .handle(&json!({ "rawPath": "/v2/" }))
        .await
        .expect_err("not an event of the events function");

    // Dead letters are read without being consumed.
    let dlq = aws.config.dead_letter_queue_url.clone().expect("a DLQ");
    for execution in [7, 8] {
        aws.sqs
            .send_message()
            .queue_url(&dlq)
            .message_body(serde_json::to_string(&Job::Plan { execution }).expect("JSON"))
            .send()
            .await
            .expect("sent to the DLQ");
    }
    let dead_letters = replication.dead_letters.clone().expect("a DLQ reader");
    let letters = dead_letters.list(10).await.expect("listed");
    assert_eq!(letters.len(), 2, "{letters:?}");
    let mut bodies: Vec<&str> = letters.iter().map(|l| l.body.as_str()).collect();
    bodies.sort_unstable();
    assert_eq!(
        bodies,
        [
            r#"{"job":"plan","execution":7}"#,
            r#"{"job":"plan","execution":8}"#
        ]
    );
    assert!(
        letters
            .iter()
            .all(|l| l.attempts >= 1 && l.first_attempt.is_some())
    );
    assert_eq!(dead_letters.list(1).await.expect("listed").len(), 1);
    assert_eq!(
        dead_letters.list(10).await.expect("listed again").len(),
        2,
        "listing consumed nothing"
    );
}

#[tokio::test]
#[ignore = "needs DynamoDB Local, Garage, moto and docker-registry: scripts/services"]
async fn credentials_sealed_by_kms_open_only_as_kms_sealed() {
    let aws = AwsResources::create().await;
    let (_, replication) = AwsReplication::open(&storage().await, &aws.config)
        .await
        .expect("opens");
    let secrets = replication.replicator.secrets();
    let sealed = secrets.seal("hunter2").await.expect("sealed");
    assert_eq!(sealed[0], 2, "the KMS format byte");
    assert_eq!(secrets.open(&sealed).await.expect("opened"), "hunter2");
    let mut local = sealed.clone();
    local[0] = 1;
    let refused = secrets.open(&local).await.expect_err("not KMS-sealed");
    assert!(
        format!("{refused:?}").contains("enter the registry's credential again"),
        "{refused:?}"
    );
    secrets.open(&[]).await.expect_err("empty");
}
