//! The API Gateway events of `infra/events/` through the router each registry function serves:
//! the same [`FunctionConfig::router`] its `main` builds (Lambda settings, role filter), fed by
//! `lambda_http`'s own event conversion, answered through `lambda_http`'s own response
//! conversion.
//!
//! Every event runs against a fresh registry seeded with the same content, so that the
//! events' fixed names, digests and upload ids find what they refer to. The always-run tests
//! use the embedded stores; the `#[ignore]`d one runs every event against S3 and DynamoDB,
//! as a deployed function does, and needs Garage and DynamoDB Local:
//!
//! ```sh
//! eval "$(scripts/services/dynamodb-local.sh start)"
//! eval "$(scripts/services/garage.sh start /tmp/berth-garage)"
//! cargo test -p berth-runtime --all-features --test lambda_events -- --include-ignored
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use berth_core::digest::DigestHasher;
use berth_core::ports::{ByteStream, StagedUpload, UploadSession};
use berth_core::{
    Algorithm, Digest, ErrorCode, Reference, Registry, RepositoryName, RequestContext, UploadId,
};
use berth_runtime::lambda::{ConfigError, FunctionConfig};
use berth_runtime::{Role, StorageConfig, Stores};
use bytes::Bytes;
use lambda_http::http::HeaderMap;
use lambda_http::{Body, Context, LambdaEvent};
use serde_json::{Value, json};
use tower::{Service as _, ServiceExt as _};

// --- the seeded registry: what the events refer to -------------------------------------------

const REPO: &str = "library/hello";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

const CONFIG_DIGEST: &str =
    "sha256:7db291fb1a4d6fb7596c55fd195d2b64e3e7b55c66be5ee3d0c16129fa98e1c6";
const LAYER_DIGEST: &str =
    "sha256:1783f1f6842889ff855d25b6d45d33dd7401ffa94eb93704f6a374c264cde486";
const CHUNK_DIGEST: &str =
    "sha256:c08ff8bb11c422fb498961eecf6f62d56642b9e80c823362f3c687b8c99f0260";
const CLOSING_DIGEST: &str =
    "sha256:9868ada140e7318673e3e3e2ac5a4607f35358011a8b055c6d25207be27e8c1b";
const V1_DIGEST: &str = "sha256:d19f18156789fe53ae6c05119f5e630e294f78debdebff5557511caebba73f55";
const OLD_DIGEST: &str = "sha256:1f8f8708cbe83ae9218b8167a0783f9bac69464770d760f1280489da7d597050";
const V2_DIGEST: &str = "sha256:185e946618bbb835021182bf74706c328c07b5fe50ea75c6c66e263d138a053b";

/// The image config blob.
const CONFIG: &str = r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:1783f1f6842889ff855d25b6d45d33dd7401ffa94eb93704f6a374c264cde486"]}}"#;

/// The manifest tagged `v1`.
const MANIFEST_V1: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:7db291fb1a4d6fb7596c55fd195d2b64e3e7b55c66be5ee3d0c16129fa98e1c6","size":151},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:1783f1f6842889ff855d25b6d45d33dd7401ffa94eb93704f6a374c264cde486","size":600}],"annotations":{"org.opencontainers.image.version":"v1"}}"#;

/// The manifest tagged `old`, which `push-manifest-delete` deletes.
const MANIFEST_OLD: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:7db291fb1a4d6fb7596c55fd195d2b64e3e7b55c66be5ee3d0c16129fa98e1c6","size":151},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:1783f1f6842889ff855d25b6d45d33dd7401ffa94eb93704f6a374c264cde486","size":600}],"annotations":{"org.opencontainers.image.version":"old"}}"#;

/// The manifest `push-manifest-put` sends as tag `v2` (not seeded).
const MANIFEST_V2: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:7db291fb1a4d6fb7596c55fd195d2b64e3e7b55c66be5ee3d0c16129fa98e1c6","size":151},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:1783f1f6842889ff855d25b6d45d33dd7401ffa94eb93704f6a374c264cde486","size":600}],"annotations":{"org.opencontainers.image.version":"v2"}}"#;

/// The open, empty session `push-upload-chunk` sends its chunk to.
const SESSION_CHUNK: &str = "4d6f1c3a-2b8e-4f0a-9c5d-7e1b3a9f2c61";
/// The session holding [`closing`]'s bytes, which `push-upload-close` closes.
const SESSION_CLOSE: &str = "8a2e5b7c-1d4f-4e6a-b3c9-0f2d8e6a4b17";
/// The open, empty session `push-upload-oversize` sends too much to.
const SESSION_OVERSIZE: &str = "c7b1e9d3-5a2f-4c8e-a6d0-3e9f1b7c5a24";

const LIMIT: u64 = 4 * 1024 * 1024;

/// `len` bytes counting by `step` from `start`, modulo 256: binary, not UTF-8.
fn pattern(len: usize, step: usize, start: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * step + start) % 256) as u8).collect()
}

/// The layer blob.
fn layer() -> Vec<u8> {
    pattern(600, 7, 3)
}

/// The chunk `push-upload-chunk` carries, base64-encoded.
fn chunk() -> Vec<u8> {
    pattern(300, 11, 5)
}

/// The blob staged in [`SESSION_CLOSE`].
fn closing() -> Vec<u8> {
    pattern(200, 13, 1)
}

/// The test's own writes, as the fixtures' set-up.
fn seeding() -> RequestContext {
    RequestContext::system("test-setup", "seed")
}

fn repo() -> RepositoryName {
    REPO.parse().expect("a repository name")
}

fn digest(text: &str) -> Digest {
    text.parse().expect("a digest")
}

fn reference(text: &str) -> Reference {
    text.parse().expect("a reference")
}

fn upload_id(text: &str) -> UploadId {
    text.parse().expect("an upload id")
}

fn stream(bytes: Vec<u8>) -> ByteStream {
    Box::pin(futures_util::stream::iter([Ok(Bytes::from(bytes))]))
}

#[test]
fn the_seed_is_what_the_events_name() {
    let sha256 = |bytes: &[u8]| Digest::of(Algorithm::Sha256, bytes).to_string();
    assert_eq!(sha256(CONFIG.as_bytes()), CONFIG_DIGEST);
    assert_eq!(sha256(&layer()), LAYER_DIGEST);
    assert_eq!(sha256(&chunk()), CHUNK_DIGEST);
    assert_eq!(sha256(&closing()), CLOSING_DIGEST);
    assert_eq!(sha256(MANIFEST_V1.as_bytes()), V1_DIGEST);
    assert_eq!(sha256(MANIFEST_OLD.as_bytes()), OLD_DIGEST);
    assert_eq!(sha256(MANIFEST_V2.as_bytes()), V2_DIGEST);
}

// --- a registry as a function sees it -------------------------------------------------------

/// A fresh, seeded registry and the configuration the functions serve it with.
struct Deployment {
    config: FunctionConfig,
    stores: Stores,
    registry: Arc<Registry>,
    /// Blob GETs answer with a presigned S3 URL rather than bytes.
    on_s3: bool,
    _data_dir: Option<tempfile::TempDir>,
}

/// The configuration of a function whose environment holds `vars` and nothing else.
fn function_config(vars: &[(&str, String)]) -> Result<FunctionConfig, ConfigError> {
    FunctionConfig::from_vars(|name| {
        Ok(vars
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.clone()))
    })
}

impl Deployment {
    /// The functions' defaults, over the embedded stores in a new directory.
    async fn local() -> Self {
        let config = function_config(&[
            ("BERTH_BLOB_STORE", "s3://unused".into()),
            ("BERTH_METADATA", "dynamodb://unused".into()),
            ("BERTH_TOKEN_KEYS_SSM", "/berth/test/token-keys".into()),
        ])
        .expect("the default function configuration");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let stores = StorageConfig::local(dir.path())
            .open_stores()
            .await
            .expect("embedded stores");
        Self::seeded(config, stores, false, Some(dir)).await
    }

    /// A function's configuration with its defaults, over a table and a bucket prefix of
    /// its own on the services `scripts/services/*.sh` started.
    async fn aws() -> Self {
        let bucket = std::env::var("BERTH_TEST_S3_BUCKET").expect(
            "BERTH_TEST_S3_BUCKET, AWS_ENDPOINT_URL_S3 and AWS_ENDPOINT_URL_DYNAMODB name the \
             services: eval \"$(scripts/services/garage.sh start DIR)\" and \
             \"$(scripts/services/dynamodb-local.sh start)\"",
        );
        let run = uuid::Uuid::new_v4().simple().to_string();
        let config = function_config(&[
            ("BERTH_BLOB_STORE", format!("s3://{bucket}/lambda-{run}")),
            (
                "BERTH_METADATA",
                format!("dynamodb://berth-lambda-{}", &run[..12]),
            ),
            ("BERTH_S3_PATH_STYLE", "true".into()),
            ("BERTH_TOKEN_KEYS_SSM", "/berth/test/token-keys".into()),
        ])
        .expect("a function configuration");
        config.storage.init().await.expect("the table is created");
        let stores = config.storage.open_stores().await.expect("S3 and DynamoDB");
        Self::seeded(config, stores, true, None).await
    }

    async fn seeded(
        config: FunctionConfig,
        stores: Stores,
        on_s3: bool,
        data_dir: Option<tempfile::TempDir>,
    ) -> Self {
        let registry = stores.registry();
        let deployment = Self {
            config,
            stores,
            registry,
            on_s3,
            _data_dir: data_dir,
        };
        deployment.seed().await;
        deployment
    }

    async fn seed(&self) {
        let registry = &self.registry;
        let repo = repo();
        for (bytes, digest) in [
            (CONFIG.as_bytes().to_vec(), CONFIG_DIGEST),
            (layer(), LAYER_DIGEST),
        ] {
            registry
                .upload_whole(&seeding(), &repo, &self::digest(digest), stream(bytes))
                .await
                .expect("a seeded blob");
        }
        for (tag, manifest) in [("v1", MANIFEST_V1), ("old", MANIFEST_OLD)] {
            registry
                .put_manifest(
                    &seeding(),
                    &repo,
                    &reference(tag),
                    Some(OCI_MANIFEST),
                    Bytes::from_static(manifest.as_bytes()),
                )
                .await
                .expect("a seeded manifest");
        }
        for id in [SESSION_CHUNK, SESSION_CLOSE, SESSION_OVERSIZE] {
            self.open_session(upload_id(id)).await;
        }
        registry
            .append_upload(&repo, &upload_id(SESSION_CLOSE), None, stream(closing()))
            .await
            .expect("a staged chunk");
    }

    /// Opens an upload session with a chosen id, as `POST /blobs/uploads/` would with a
    /// random one.
    async fn open_session(&self, id: UploadId) {
        let backend = self
            .stores
            .blobs
            .begin_upload(&id)
            .await
            .expect("a staging area");
        let started_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let session = UploadSession {
            repository: repo(),
            staged: StagedUpload {
                id,
                size: 0,
                backend,
            },
            hash: DigestHasher::new(Algorithm::Sha256).save(),
            started_at,
        };
        self.stores
            .metadata
            .create_upload(&session)
            .await
            .expect("a session");
    }

    /// The router of the function of `role`, as its `main` builds it.
    fn function(&self, role: Role) -> berth_http::Router {
        self.config.router(self.registry.clone(), role, None)
    }

    /// Sends `event` (API Gateway JSON) to the function of `role`.
    async fn invoke(&self, role: Role, event: &str) -> Answer {
        let request = lambda_http::request::from_str(event).expect("an API Gateway event");
        let response = self
            .function(role)
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let response = lambda_http::IntoResponse::into_response(response).await;
        let (parts, body) = response.into_parts();
        Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }
}

/// A function's answer, as `lambda_http` hands it back to API Gateway.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Body,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("a text header"))
    }

    fn bytes(&self) -> &[u8] {
        self.body.as_ref()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(self.bytes()).unwrap_or_else(|e| {
            panic!(
                "a JSON body, not {:?}: {e}",
                String::from_utf8_lossy(self.bytes())
            )
        })
    }

    /// The OCI error code of a failure.
    fn error_code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .expect("an OCI error body")
            .to_owned()
    }

    /// Asserts the answer has no body bytes (a HEAD, a 201, a 202).
    fn assert_empty(&self) {
        assert!(self.bytes().is_empty(), "{self:?}");
    }
}

// --- the events -----------------------------------------------------------------------------

fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/events")
}

fn event(name: &str) -> String {
    let path = events_dir().join(format!("{name}.json"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every event, by file name: `pull-*` go to the pull function, `push-*` to the push one.
const EVENTS: [&str; 14] = [
    "pull-ping",
    "pull-manifest-get-by-tag",
    "pull-manifest-head",
    "pull-blob-get",
    "pull-blob-head",
    "pull-tags-list",
    "pull-catalog",
    "pull-refuses-push-route",
    "push-upload-start",
    "push-upload-chunk",
    "push-upload-close",
    "push-manifest-put",
    "push-manifest-delete",
    "push-upload-oversize",
];

fn role_of(name: &str) -> Role {
    if name.starts_with("pull-") {
        Role::Pull
    } else if name.starts_with("push-") {
        Role::Push
    } else {
        panic!("{name}: an event's name says its function")
    }
}

#[test]
fn every_event_file_is_tested() {
    let mut files: Vec<String> = std::fs::read_dir(events_dir())
        .expect("infra/events")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| {
            path.file_stem()
                .and_then(|stem| stem.to_str())
                .expect("a file name")
                .to_owned()
        })
        .collect();
    files.sort();
    let mut tested: Vec<&str> = EVENTS.to_vec();
    tested.sort_unstable();
    assert_eq!(files, tested);
}

/// Sends one event to its function on a fresh `deployment` and checks the answer and what
/// it left behind.
async fn check_event(deployment: &Deployment, name: &str) {
    let json = event(name);
    let fields: Value = serde_json::from_str(&json).expect("JSON");
    let answer = deployment.invoke(role_of(name), &json).await;
    let context = format!("{name}: {answer:?}");

    // Every answer: the API version, the id API Gateway logs the request under, and no
    // word about a connection the function does not hold.
    assert_eq!(answer.header("connection"), None, "{context}");
    assert_eq!(
        answer.header("docker-distribution-api-version"),
        Some("registry/2.0"),
        "{context}"
    );
    assert_eq!(
        answer.header("x-request-id"),
        fields["requestContext"]["requestId"].as_str(),
        "{context}"
    );

    let registry = &deployment.registry;
    let repo = repo();
    match name {
        "pull-ping" => {
            assert_eq!(answer.status, 200, "{context}");
            assert_eq!(answer.json(), json!({}), "{context}");
        }
        "pull-manifest-get-by-tag" => {
            assert_eq!(answer.status, 200, "{context}");
            assert_eq!(answer.header("content-type"), Some(OCI_MANIFEST));
            assert_eq!(answer.header("docker-content-digest"), Some(V1_DIGEST));
            let length = MANIFEST_V1.len().to_string();
            assert_eq!(answer.header("content-length"), Some(length.as_str()));
            // Exactly the bytes pushed, sent as text (JSON), so API Gateway needs no base64.
            assert!(matches!(answer.body, Body::Text(_)), "{context}");
            assert_eq!(answer.bytes(), MANIFEST_V1.as_bytes(), "{context}");
        }
        "pull-manifest-head" => {
            assert_eq!(answer.status, 200, "{context}");
            let length = MANIFEST_V1.len().to_string();
            assert_eq!(answer.header("content-length"), Some(length.as_str()));
            assert_eq!(answer.header("docker-content-digest"), Some(V1_DIGEST));
            assert_eq!(answer.header("content-type"), Some(OCI_MANIFEST));
            answer.assert_empty();
        }
        "pull-blob-get" => {
            assert_eq!(answer.header("docker-content-digest"), Some(LAYER_DIGEST));
            if deployment.on_s3 {
                assert_eq!(answer.status, 307, "{context}");
                let location = answer.header("location").expect("a presigned URL");
                assert!(location.contains("X-Amz-Signature="), "{location}");
                assert!(location.contains("X-Amz-Expires=1200"), "{location}");
                answer.assert_empty();
                let fetched = reqwest::get(location)
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .expect("the presigned URL serves the blob");
                let bytes = fetched.bytes().await.expect("the blob's bytes");
                assert_eq!(bytes.as_ref(), layer().as_slice());
            } else {
                // The embedded store has no URL to send the client to, so the bytes come
                // back, and binary bytes go back to API Gateway base64-encoded.
                assert_eq!(answer.status, 200, "{context}");
                assert!(matches!(answer.body, Body::Binary(_)), "{context}");
                assert_eq!(answer.bytes(), layer().as_slice());
            }
        }
        "pull-blob-head" => {
            assert_eq!(answer.status, 200, "{context}");
            assert_eq!(answer.header("content-length"), Some("600"));
            assert_eq!(answer.header("docker-content-digest"), Some(LAYER_DIGEST));
            answer.assert_empty();
        }
        "pull-tags-list" => {
            assert_eq!(answer.status, 200, "{context}");
            assert_eq!(
                answer.json(),
                json!({ "name": REPO, "tags": ["old", "v1"] })
            );
        }
        "pull-catalog" => {
            assert_eq!(answer.status, 200, "{context}");
            assert_eq!(answer.json(), json!({ "repositories": [REPO] }));
        }
        "pull-refuses-push-route" => {
            assert_eq!(answer.status, 405, "{context}");
            assert_eq!(answer.error_code(), "UNSUPPORTED", "{context}");
        }
        "push-upload-start" => {
            assert_eq!(answer.status, 202, "{context}");
            let location = answer.header("location").expect("the session's location");
            let id = location
                .strip_prefix("/v2/library/hello/blobs/uploads/")
                .expect("a session of the repository");
            assert_eq!(answer.header("docker-upload-uuid"), Some(id));
            assert_eq!(answer.header("range"), Some("0-0"));
            assert_eq!(answer.header("oci-chunk-min-length"), Some("1048576"));
            assert_eq!(answer.header("oci-chunk-max-length"), Some("4194304"));
            answer.assert_empty();
            let size = registry
                .upload_progress(&repo, &upload_id(id))
                .await
                .expect("the session is open");
            assert_eq!(size, 0);
        }
        "push-upload-chunk" => {
            assert_eq!(answer.status, 202, "{context}");
            assert_eq!(
                answer.header("location"),
                Some(format!("/v2/library/hello/blobs/uploads/{SESSION_CHUNK}").as_str())
            );
            assert_eq!(answer.header("docker-upload-uuid"), Some(SESSION_CHUNK));
            assert_eq!(answer.header("range"), Some("0-299"));
            answer.assert_empty();
            // The stored bytes are the decoded chunk, not its base64 text: they close the
            // upload under the chunk's digest.
            registry
                .complete_upload(
                    &seeding(),
                    &repo,
                    &upload_id(SESSION_CHUNK),
                    &digest(CHUNK_DIGEST),
                    None,
                )
                .await
                .expect("the chunk was stored decoded");
        }
        "push-upload-close" => {
            assert_eq!(answer.status, 201, "{context}");
            let blob = format!("/v2/library/hello/blobs/{CLOSING_DIGEST}");
            assert_eq!(answer.header("location"), Some(blob.as_str()));
            assert_eq!(answer.header("docker-content-digest"), Some(CLOSING_DIGEST));
            answer.assert_empty();
            let size = registry
                .blob_size(&repo, &digest(CLOSING_DIGEST))
                .await
                .expect("the blob is published");
            assert_eq!(size, 200);
        }
        "push-manifest-put" => {
            assert_eq!(answer.status, 201, "{context}");
            let manifest = format!("/v2/library/hello/manifests/{V2_DIGEST}");
            assert_eq!(answer.header("location"), Some(manifest.as_str()));
            assert_eq!(answer.header("docker-content-digest"), Some(V2_DIGEST));
            answer.assert_empty();
            let stored = registry
                .manifest(&repo, &reference("v2"))
                .await
                .expect("the tag is set");
            assert_eq!(stored.bytes.as_ref(), MANIFEST_V2.as_bytes());
        }
        "push-manifest-delete" => {
            assert_eq!(answer.status, 202, "{context}");
            answer.assert_empty();
            let gone = registry
                .manifest(&repo, &reference("old"))
                .await
                .expect_err("the manifest and its tag are deleted");
            assert_eq!(gone.code(), ErrorCode::ManifestUnknown);
            registry
                .manifest(&repo, &reference("v1"))
                .await
                .expect("the other manifest stays");
        }
        "push-upload-oversize" => {
            assert_oversize_refused(&answer, &context);
            assert_nothing_written(deployment, SESSION_OVERSIZE).await;
        }
        _ => panic!("{name} has no expectations"),
    }
}

fn assert_oversize_refused(answer: &Answer, context: &str) {
    assert_eq!(answer.status, 413, "{context}");
    assert_eq!(answer.error_code(), "PAYLOAD_TOO_LARGE", "{context}");
    let error = &answer.json()["errors"][0];
    let message = error["message"].as_str().expect("a message");
    assert!(message.contains(&LIMIT.to_string()), "{message}");
    assert!(message.contains("PATCH"), "{message}");
    assert!(message.contains("Content-Range"), "{message}");
    assert_eq!(error["detail"], json!({ "limit": LIMIT }));
}

/// Asserts the session `id` is still empty and no blob was published from it.
async fn assert_nothing_written(deployment: &Deployment, id: &str) {
    let repo = repo();
    let size = deployment
        .registry
        .upload_progress(&repo, &upload_id(id))
        .await
        .expect("the session is still open");
    assert_eq!(size, 0, "bytes of a refused request were staged");
    let unknown = deployment
        .registry
        .blob_size(&repo, &digest(CLOSING_DIGEST))
        .await
        .expect_err("no blob was published");
    assert_eq!(unknown.code(), ErrorCode::BlobUnknown);
}

#[tokio::test]
async fn every_event_on_embedded_storage() {
    for name in EVENTS {
        check_event(&Deployment::local().await, name).await;
    }
}

#[tokio::test]
#[ignore = "needs Garage and DynamoDB Local: scripts/services/{garage,dynamodb-local}.sh"]
async fn every_event_on_s3_and_dynamodb() {
    for name in EVENTS {
        check_event(&Deployment::aws().await, name).await;
    }
}

// --- the payload limit, with real bodies ----------------------------------------------------

/// The chunk event with `body` as its (base64) body, declared in `Content-Length` or not.
fn chunk_event(body: &[u8], declare_length: bool) -> String {
    let mut fields: Value = serde_json::from_str(&event("push-upload-chunk")).expect("JSON");
    let headers = fields["headers"].as_object_mut().expect("headers");
    headers.remove("content-range");
    if declare_length {
        headers.insert("content-length".into(), body.len().to_string().into());
    } else {
        headers.remove("content-length");
    }
    fields["body"] = BASE64.encode(body).into();
    fields.to_string()
}

#[test]
fn the_chunk_event_carries_the_chunk() {
    let fields: Value = serde_json::from_str(&event("push-upload-chunk")).expect("JSON");
    assert_eq!(fields["isBase64Encoded"], true);
    assert_eq!(
        fields["body"].as_str(),
        Some(BASE64.encode(chunk()).as_str())
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_and_nothing_is_written() {
    let body = pattern(LIMIT as usize + 1, 17, 9);
    for declare_length in [true, false] {
        let deployment = Deployment::local().await;
        let answer = deployment
            .invoke(Role::Push, &chunk_event(&body, declare_length))
            .await;
        let context = format!("Content-Length declared: {declare_length}: {answer:?}");
        assert_oversize_refused(&answer, &context);
        let size = deployment
            .registry
            .upload_progress(&repo(), &upload_id(SESSION_CHUNK))
            .await
            .expect("the session is still open");
        assert_eq!(size, 0, "{context}");
    }
}

#[tokio::test]
async fn a_closing_chunk_without_a_declared_length_is_not_lost() {
    // Close the empty chunk session with the whole blob as the PUT's body, declaring no
    // Content-Length: the handler must still see the body.
    let mut fields: Value = serde_json::from_str(&event("push-upload-close")).expect("JSON");
    let path = format!("/v2/library/hello/blobs/uploads/{SESSION_CHUNK}");
    fields["rawPath"] = path.clone().into();
    fields["requestContext"]["http"]["path"] = path.into();
    fields["rawQueryString"] = format!("digest={CHUNK_DIGEST}").into();
    fields["queryStringParameters"] = json!({ "digest": CHUNK_DIGEST });
    fields["headers"]
        .as_object_mut()
        .expect("headers")
        .remove("content-length");
    fields["body"] = BASE64.encode(chunk()).into();
    fields["isBase64Encoded"] = true.into();

    let deployment = Deployment::local().await;
    let answer = deployment.invoke(Role::Push, &fields.to_string()).await;
    assert_eq!(answer.status, 201, "{answer:?}");
    let size = deployment
        .registry
        .blob_size(&repo(), &digest(CHUNK_DIGEST))
        .await
        .expect("the blob is published");
    assert_eq!(size, 300);
}

#[tokio::test]
async fn a_body_at_the_limit_is_accepted() {
    let body = pattern(LIMIT as usize, 17, 9);
    let deployment = Deployment::local().await;
    let answer = deployment
        .invoke(Role::Push, &chunk_event(&body, true))
        .await;
    assert_eq!(answer.status, 202, "{answer:?}");
    assert_eq!(answer.header("range"), Some("0-4194303"));
}

#[tokio::test]
async fn a_configured_chunk_limit_is_advertised_and_enforced() {
    let mut deployment = Deployment::local().await;
    deployment.config = function_config(&[
        ("BERTH_BLOB_STORE", "s3://unused".into()),
        ("BERTH_METADATA", "dynamodb://unused".into()),
        ("BERTH_CHUNK_MIN_LENGTH", "100".into()),
        ("BERTH_CHUNK_MAX_LENGTH", "299".into()),
        ("BERTH_TOKEN_KEYS_SSM", "/berth/test/token-keys".into()),
    ])
    .expect("a function configuration");
    let started = deployment
        .invoke(Role::Push, &event("push-upload-start"))
        .await;
    assert_eq!(started.header("oci-chunk-min-length"), Some("100"));
    assert_eq!(started.header("oci-chunk-max-length"), Some("299"));
    // The 300-byte chunk is one byte too many.
    let refused = deployment
        .invoke(Role::Push, &event("push-upload-chunk"))
        .await;
    assert_eq!(refused.status, 413, "{refused:?}");
    assert!(
        refused.json()["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("at most 299 bytes")),
        "{refused:?}"
    );
}

// --- what API Gateway finally receives ------------------------------------------------------

/// Runs `event` through `lambda_http`'s adapter (the service `lambda_http::run` drives) and
/// returns the JSON the function returns to API Gateway.
async fn gateway_response<S>(service: S, event: &str) -> Value
where
    S: lambda_http::Service<
            lambda_http::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        >,
    S::Future: Send + 'static,
{
    let payload = serde_json::from_str(event).expect("an API Gateway event");
    let mut adapter = lambda_http::Adapter::from(service);
    let response = adapter
        .call(LambdaEvent::new(payload, Context::default()))
        .await
        .expect("infallible");
    serde_json::to_value(response).expect("a serialisable response")
}

#[tokio::test]
async fn api_gateway_receives_headers_and_binary_bodies_intact() {
    let deployment = Deployment::local().await;

    let head = gateway_response(deployment.function(Role::Pull), &event("pull-blob-head")).await;
    assert_eq!(head["statusCode"], 200, "{head}");
    assert_eq!(head["headers"]["content-length"], "600", "{head}");

    let get = gateway_response(deployment.function(Role::Pull), &event("pull-blob-get")).await;
    assert_eq!(get["isBase64Encoded"], true, "{get}");
    let body = get["body"].as_str().expect("a body");
    assert_eq!(
        Body::from_maybe_encoded(true, body).as_ref(),
        layer().as_slice()
    );

    let patched =
        gateway_response(deployment.function(Role::Push), &event("push-upload-chunk")).await;
    assert_eq!(patched["statusCode"], 202, "{patched}");
    let headers = &patched["headers"];
    assert_eq!(
        headers["location"],
        format!("/v2/library/hello/blobs/uploads/{SESSION_CHUNK}"),
        "{patched}"
    );
    assert_eq!(headers["range"], "0-299", "{patched}");
    assert_eq!(headers["docker-upload-uuid"], SESSION_CHUNK, "{patched}");
}

/// `event` sent to another path and method, from another address, with these headers added.
fn retargeted(
    event: &str,
    method: &str,
    path: &str,
    query: &str,
    source_ip: &str,
    headers: &[(&str, &str)],
) -> String {
    let mut event: Value = serde_json::from_str(event).expect("an event");
    event["rawPath"] = json!(path);
    event["rawQueryString"] = json!(query);
    event["requestContext"]["http"]["method"] = json!(method);
    event["requestContext"]["http"]["path"] = json!(path);
    event["requestContext"]["http"]["sourceIp"] = json!(source_ip);
    event["headers"]["x-forwarded-for"] = json!(source_ip);
    for (name, value) in headers {
        event["headers"][*name] = json!(value);
    }
    event.to_string()
}

#[tokio::test]
async fn the_functions_check_and_issue_tokens_through_api_gateway() {
    let deployment = Deployment::local().await;
    let ring = berth_auth::KeyRing::from_pems(&[berth_auth::generate_es256_pem().expect("a key")])
        .expect("a ring");
    let auth = berth_runtime::auth::Auth::new(
        deployment.config.auth.clone(),
        &ring,
        deployment.stores.accounts.clone(),
    )
    .expect("auth");
    berth_runtime::auth::bootstrap(
        &*deployment.stores.accounts,
        auth.tokens.password_hasher(),
        Some("Correct-Horse-7"),
    )
    .await
    .expect("the first accounts");
    let pull = || {
        deployment.config.router(
            deployment.registry.clone(),
            Role::Pull,
            Some(deployment.config.registry_auth(&ring, None)),
        )
    };
    let token_function = || deployment.config.token_router(&auth, &deployment.stores);

    // Anonymous: challenged with the realm on the host the client called, over https.
    let challenged = gateway_response(pull(), &event("pull-manifest-get-by-tag")).await;
    assert_eq!(challenged["statusCode"], 401, "{challenged}");
    assert_eq!(
        challenged["headers"]["www-authenticate"],
        "Bearer realm=\"https://r4nd0m1d.execute-api.eu-west-1.amazonaws.com/service/token\",\
         service=\"berth\",scope=\"repository:library/hello:pull\""
    );

    // The token function, as docker asks it (GET with Basic credentials).
    let basic = format!("Basic {}", BASE64.encode("admin:Correct-Horse-7"));
    let ask = retargeted(
        &event("pull-ping"),
        "GET",
        "/service/token",
        "service=berth&scope=repository%3Alibrary%2Fhello%3Apull%2Cpush",
        "203.0.113.24",
        &[("authorization", &basic)],
    );
    let issued = gateway_response(token_function(), &ask).await;
    assert_eq!(issued["statusCode"], 200, "{issued}");
    let body: Value = serde_json::from_str(issued["body"].as_str().expect("a body")).expect("JSON");
    let token = body["token"].as_str().expect("a token").to_owned();
    assert_eq!(body["access_token"], body["token"]);

    let bearer = format!("Bearer {token}");
    let with_token = retargeted(
        &event("pull-manifest-get-by-tag"),
        "GET",
        "/v2/library/hello/manifests/v1",
        "",
        "203.0.113.24",
        &[("authorization", &bearer)],
    );
    let pulled = gateway_response(pull(), &with_token).await;
    assert_eq!(pulled["statusCode"], 200, "{pulled}");
    assert_eq!(pulled["headers"]["docker-content-digest"], V1_DIGEST);

    // Failed logins are counted per source address as API Gateway saw it.
    let wrong = format!("Basic {}", BASE64.encode("admin:wrong password"));
    // X-Forwarded-For is the client's to write: it must not decide the source.
    let spoofed = std::cell::Cell::new(0u8);
    let guess = |ip: &str| {
        spoofed.set(spoofed.get() + 1);
        let forwarded = format!("192.0.2.{}", spoofed.get());
        let event = retargeted(
            &event("pull-ping"),
            "GET",
            "/service/token",
            "service=berth",
            ip,
            &[("authorization", &wrong)],
        );
        let mut event: Value = serde_json::from_str(&event).expect("an event");
        event["headers"]["x-forwarded-for"] = json!(forwarded);
        event.to_string()
    };
    for _ in 0..5 {
        let refused = gateway_response(token_function(), &guess("198.51.100.7")).await;
        assert_eq!(refused["statusCode"], 401, "{refused}");
    }
    let throttled = gateway_response(token_function(), &guess("198.51.100.7")).await;
    assert_eq!(throttled["statusCode"], 429, "{throttled}");
    let elsewhere = gateway_response(token_function(), &guess("192.0.2.99")).await;
    assert_eq!(
        elsewhere["statusCode"], 401,
        "another source is not throttled: {elsewhere}"
    );

    // The management API is the token function's too.
    let me = retargeted(
        &event("pull-ping"),
        "GET",
        "/api/v2.0/users/current",
        "",
        "203.0.113.24",
        &[("authorization", &basic)],
    );
    let current = gateway_response(token_function(), &me).await;
    assert_eq!(current["statusCode"], 200, "{current}");
    let user: Value =
        serde_json::from_str(current["body"].as_str().expect("a body")).expect("JSON");
    assert_eq!(user["username"], "admin", "{user}");
}
