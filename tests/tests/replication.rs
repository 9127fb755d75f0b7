//! Replication over real HTTP: Berth instances in this process (each on its own port, with
//! auth on and its own data directory) and CNCF Distribution (`docker-registry`) as the
//! peer. Event-triggered push of a multi-arch image with a tag filter, deletion replication,
//! manual push to Distribution with namespace rewriting, scheduled pull from Distribution,
//! a remote that is down then comes back, wrong credentials, stopping, and the API's checks.
//! A run's end reaches the project's `REPLICATION` webhooks.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use berth_core::{Actor, Event, EventBus, EventKind, EventSink};
use berth_replication::remote::{RemoteConfig, RemoteRegistry};
use berth_runtime::{Retries, Routes, WebhookSender};
use berth_tests::authed::{ADMIN_PASSWORD, authed_parts, serve_on_loopback};
use berth_tests::distribution::{Distribution, free_port};
use berth_tests::{Image, index, media, platform_descriptor, sha256};
use bytes::Bytes;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

/// A Berth with replication, as `berth serve` runs it, but retrying failed tasks after
/// 200 ms instead of seconds.
struct Berth {
    addr: SocketAddr,
    client: reqwest::Client,
    replication: berth_runtime::replication::LocalReplication,
    /// The ends of replication executions the registry published.
    runs: Arc<Runs>,
    _data_dir: TempDir,
}

/// The `ReplicationRun` events published, in order.
#[derive(Default)]
struct Runs(Mutex<Vec<RunEnd>>);

/// An execution's id, its policy's name, its status and the projects it replicated.
type RunEnd = (u64, String, String, Vec<String>);

impl EventSink for Runs {
    fn publish(&self, event: &Event) {
        if let EventKind::ReplicationRun {
            policy,
            execution,
            status,
            projects,
        } = &event.kind
        {
            assert_eq!(event.actor, Actor::System("replication".into()));
            self.0.lock().unwrap_or_else(PoisonError::into_inner).push((
                *execution,
                policy.clone(),
                status.clone(),
                projects.clone(),
            ));
        }
    }
}

impl Berth {
    async fn start() -> Self {
        let parts = authed_parts().await;
        let secrets =
            berth_runtime::replication::local_secrets(parts.data_dir.path(), None).expect("a key");
        let runs = Arc::new(Runs::default());
        let webhooks = parts.stores.webhooks.clone();
        let sender = WebhookSender::start(
            webhooks.clone().expect("embedded storage keeps webhooks"),
            Retries::default(),
        )
        .expect("the sender starts");
        let replication = berth_runtime::replication::start_local(
            &parts.stores,
            secrets,
            EventBus::new()
                .subscribe(runs.clone())
                .subscribe(Arc::new(sender)),
            |r| r.with_retry_base(Duration::from_millis(200)),
        );
        let router = Routes::new()
            .registry(
                replication.registry.clone(),
                berth_runtime::Settings::default(),
            )
            .accounts(
                &parts.auth,
                parts.stores.accounts.clone(),
                parts.stores.metadata.clone(),
            )
            .replication(|management| replication.api(management))
            .events(replication.events.clone())
            .webhooks(webhooks)
            .build();
        let (addr, _) = serve_on_loopback(router).await;
        let data_dir = parts.data_dir;
        Self {
            addr,
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("a client"),
            replication,
            runs,
            _data_dir: data_dir,
        }
    }

    /// The published ends of execution `id`, once there is one.
    async fn run_ends(&self, id: u64) -> Vec<RunEnd> {
        for _ in 0..100 {
            let ends: Vec<_> = self
                .runs
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .filter(|end| end.0 == id)
                .cloned()
                .collect();
            if !ends.is_empty() {
                return ends;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("execution {id}: no end was published");
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A management API call as admin (or as `credentials`): the status and the JSON body.
    async fn api_as(
        &self,
        credentials: (&str, &str),
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut request = self
            .client
            .request(method, format!("{}/api/v2.0{path}", self.url()))
            .basic_auth(credentials.0, Some(credentials.1));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            headers,
        )
    }

    async fn api(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, body, _) = self
            .api_as(("admin", ADMIN_PASSWORD), method, path, body)
            .await;
        (status, body)
    }

    /// Creates something and returns the id its `Location` names.
    async fn create(&self, path: &str, body: Value) -> u64 {
        let (status, answer, headers) = self
            .api_as(("admin", ADMIN_PASSWORD), Method::POST, path, Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "POST {path}: {answer}");
        let location = headers
            .get("location")
            .and_then(|l| l.to_str().ok())
            .expect("a Location");
        location
            .rsplit('/')
            .next()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("{location} ends in an id"))
    }

    /// An OCI client of this registry as admin.
    fn client(&self) -> RemoteRegistry {
        RemoteRegistry::new(RemoteConfig {
            url: self.url(),
            insecure: false,
            credential: Some(("admin".into(), ADMIN_PASSWORD.into())),
        })
        .expect("a client")
    }

    /// An endpoint on this registry's admin side pointing at `url`.
    async fn add_endpoint(&self, name: &str, url: &str, credential: Option<(&str, &str)>) -> u64 {
        let mut body = json!({"name": name, "url": url, "type": "berth"});
        if let Some((key, secret)) = credential {
            body["credential"] =
                json!({"type": "basic", "access_key": key, "access_secret": secret});
        }
        self.create("/registries", body).await
    }

    /// Polls an execution until it is over, for up to `limit`.
    async fn finished(&self, execution: u64, limit: Duration) -> Value {
        let started = Instant::now();
        loop {
            let (status, answer) = self
                .api(
                    Method::GET,
                    &format!("/replication/executions/{execution}"),
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            if answer["status"] != "InProgress" {
                return answer;
            }
            assert!(
                started.elapsed() < limit,
                "execution {execution} still running after {limit:?}: {answer}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn tasks(&self, execution: u64) -> Vec<Value> {
        let (status, answer) = self
            .api(
                Method::GET,
                &format!("/replication/executions/{execution}/tasks"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer.as_array().expect("a list").clone()
    }

    async fn executions(&self, policy: u64) -> Vec<Value> {
        let (status, answer) = self
            .api(
                Method::GET,
                &format!("/replication/executions?policy_id={policy}&page_size=100"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer.as_array().expect("a list").clone()
    }

    async fn run(&self, policy: u64) -> u64 {
        self.create("/replication/executions", json!({"policy_id": policy}))
            .await
    }
}

/// Pushes an image (blobs, then the manifest) through an OCI client.
async fn push_image(client: &RemoteRegistry, repo: &str, reference: &str, image: &Image) {
    for blob in std::iter::once(&image.config).chain(&image.layers) {
        let digest = sha256(blob).parse().expect("a digest");
        let body: berth_core::ports::ByteStream = Box::pin(futures_util::stream::iter([Ok(
            Bytes::copy_from_slice(blob),
        )]));
        client
            .push_blob(repo, &digest, blob.len() as u64, body)
            .await
            .expect("the blob is pushed");
    }
    client
        .put_manifest(
            repo,
            reference,
            &image.media_type,
            image.manifest.clone().into(),
        )
        .await
        .expect("the manifest is pushed");
}

/// Pushes a two-platform image and its index under `tag`; returns the index's digest and
/// the two images.
async fn push_multi_arch(client: &RemoteRegistry, repo: &str, tag: &str) -> (String, [Image; 2]) {
    let amd = Image::oci(&format!("{repo}:{tag} amd64"));
    let arm = Image::oci(&format!("{repo}:{tag} arm64"));
    for image in [&amd, &arm] {
        push_image(client, repo, &image.digest(), image).await;
    }
    let index_bytes = index(
        media::OCI_INDEX,
        &[
            platform_descriptor(&amd, "amd64"),
            platform_descriptor(&arm, "arm64"),
        ],
    );
    client
        .put_manifest(repo, tag, media::OCI_INDEX, index_bytes.clone().into())
        .await
        .expect("the index is pushed");
    (sha256(&index_bytes), [amd, arm])
}

/// Waits until `repo:reference` exists (or, `present` false, is gone) in `client`'s
/// registry, for up to 20 s.
async fn wait_for(client: &RemoteRegistry, repo: &str, reference: &str, present: bool) {
    let started = Instant::now();
    loop {
        let found = client
            .manifest_head(repo, reference)
            .await
            .expect("the registry answers")
            .is_some();
        if found == present {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{repo}:{reference} {} after 20 s",
            if present {
                "did not arrive"
            } else {
                "is still there"
            }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The exact bytes of a manifest.
async fn manifest_bytes(client: &RemoteRegistry, repo: &str, reference: &str) -> Bytes {
    client
        .manifest(repo, reference)
        .await
        .expect("the registry answers")
        .unwrap_or_else(|| panic!("{repo}:{reference} is there"))
        .bytes
}

async fn blob_bytes(client: &RemoteRegistry, repo: &str, bytes: &[u8]) -> Vec<u8> {
    use futures_util::TryStreamExt;
    let digest = sha256(bytes).parse().expect("a digest");
    let (_, stream) = client.blob(repo, &digest).await.expect("the blob");
    let pieces: Vec<Bytes> = stream.try_collect().await.expect("the bytes");
    pieces.concat()
}

/// A webhook receiver on loopback: the bodies it was sent.
async fn webhook_receiver() -> (SocketAddr, Arc<Mutex<Vec<Value>>>) {
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let router = axum::Router::new()
        .route(
            "/",
            axum::routing::post(
                |axum::extract::State(received): axum::extract::State<Arc<Mutex<Vec<Value>>>>,
                 body: String| async move {
                    received
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(serde_json::from_str(&body).unwrap_or(Value::Null));
                },
            ),
        )
        .with_state(received.clone());
    let (addr, _) = serve_on_loopback(router).await;
    (addr, received)
}

/// The first body the receiver got, once it got one.
async fn wait_for_body(received: &Mutex<Vec<Value>>) -> Value {
    for _ in 0..200 {
        if let Some(body) = received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .first()
        {
            return body.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no webhook delivery arrived");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_replicates_v_tags_of_a_multi_arch_image_byte_identical_and_deletions_follow() {
    let (source, target) = tokio::join!(Berth::start(), Berth::start());
    let endpoint = source
        .add_endpoint("target", &target.url(), Some(("admin", ADMIN_PASSWORD)))
        .await;
    let (status, ping) = source
        .api(
            Method::POST,
            "/registries/ping",
            Some(json!({"id": endpoint})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ping}");
    assert_eq!(ping["status"], "healthy");
    let policy = source
        .create(
            "/replication/policies",
            json!({
                "name": "to-target",
                "dest_registry": {"id": endpoint},
                "filters": [
                    {"type": "name", "value": "library/**"},
                    {"type": "tag", "value": "v*"},
                ],
                "trigger": {"type": "event_based"},
                "replicate_deletion": true,
                "override": true,
                "enabled": true,
            }),
        )
        .await;

    let (status, answer) = source
        .api(
            Method::POST,
            "/projects",
            Some(json!({"project_name": "other"})),
        )
        .await;
    assert!(status.is_success(), "{answer}");
    let pusher = source.client();
    let (index_digest, [amd, arm]) = push_multi_arch(&pusher, "library/app", "v1").await;
    // Not replicated: the tag does not match, nor does the repository.
    push_multi_arch(&pusher, "library/app", "latest").await;
    push_multi_arch(&pusher, "other/app", "v1").await;

    let reader = target.client();
    wait_for(&reader, "library/app", "v1", true).await;
    assert_eq!(
        manifest_bytes(&reader, "library/app", "v1").await,
        manifest_bytes(&pusher, "library/app", "v1").await,
        "the index is byte-identical"
    );
    let (digest, _) = reader
        .manifest_head("library/app", "v1")
        .await
        .expect("answers")
        .expect("there");
    assert_eq!(digest.to_string(), index_digest, "same digest");
    for image in [&amd, &arm] {
        assert_eq!(
            manifest_bytes(&reader, "library/app", &image.digest()).await,
            Bytes::from(image.manifest.clone()),
            "each platform's manifest is there by digest"
        );
        for blob in std::iter::once(&image.config).chain(&image.layers) {
            assert_eq!(&blob_bytes(&reader, "library/app", blob).await, blob);
        }
    }
    assert_eq!(
        reader.tags("library/app").await.expect("tags"),
        vec!["v1".to_owned()],
        "only v* tags travel"
    );
    assert_eq!(
        reader.catalog().await.expect("catalog"),
        vec!["library/app".to_owned()],
        "other/app does not match the name filter"
    );

    let executions = source.executions(policy).await;
    assert_eq!(executions.len(), 1, "one push matched: {executions:?}");
    let execution = executions[0]["id"].as_u64().expect("an id");
    let finished = source.finished(execution, Duration::from_secs(20)).await;
    assert_eq!(finished["status"], "Succeed", "{finished}");
    assert_eq!(finished["trigger"], "event_based");
    assert_eq!(
        (finished["total"].as_u64(), finished["succeed"].as_u64()),
        (Some(1), Some(1))
    );
    let tasks = source.tasks(execution).await;
    assert_eq!(tasks[0]["src_resource"], "library/app:v1");
    assert_eq!(tasks[0]["operation"], "copy");

    // A second push of the same content: the target has it all, nothing is sent again.
    pusher
        .put_manifest(
            "library/app",
            "v1.0.1",
            media::OCI_INDEX,
            manifest_bytes(&pusher, "library/app", "v1").await,
        )
        .await
        .expect("retagged");
    wait_for(&reader, "library/app", "v1.0.1", true).await;
    let executions = source.executions(policy).await;
    let newest = executions[0]["id"].as_u64().expect("an id");
    source.finished(newest, Duration::from_secs(20)).await;
    let tasks = source.tasks(newest).await;
    assert_eq!(tasks[0]["bytes"], 0, "no blob is sent twice: {tasks:?}");

    // Deleting a tag deletes it in the target.
    assert!(
        pusher
            .delete_manifest("library/app", "v1.0.1")
            .await
            .expect("deleted")
    );
    wait_for(&reader, "library/app", "v1.0.1", false).await;
    // Deleting the manifest by digest deletes it in the target.
    assert!(
        pusher
            .delete_manifest("library/app", &index_digest)
            .await
            .expect("deleted")
    );
    wait_for(&reader, "library/app", &index_digest, false).await;
    wait_for(&reader, "library/app", "v1", false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_push_to_distribution_and_scheduled_pull_from_it() {
    let berth = Berth::start().await;
    let distribution = Distribution::start().await;
    let pusher = berth.client();
    let (index_digest, _) = push_multi_arch(&pusher, "library/web", "v2").await;
    push_image(
        &pusher,
        "library/web",
        "v2-slim",
        &Image::docker("web slim"),
    )
    .await;

    let (hooks, received) = webhook_receiver().await;
    berth
        .create(
            "/projects/library/webhook/policies",
            json!({
                "name": "replication-runs",
                "event_types": ["REPLICATION"],
                "targets": [{"type": "http", "address": format!("http://{hooks}/")}],
            }),
        )
        .await;
    let endpoint = berth
        .add_endpoint("distribution", &distribution.url, None)
        .await;
    let policy = berth
        .create(
            "/replication/policies",
            json!({
                "name": "to-distribution",
                "dest_registry": {"id": endpoint},
                "dest_namespace": "mirror",
                "dest_namespace_replace_count": 1,
                "filters": [{"type": "name", "value": "library/web"}],
                "trigger": {"type": "manual"},
            }),
        )
        .await;
    let execution = berth.run(policy).await;
    let finished = berth.finished(execution, Duration::from_secs(30)).await;
    assert_eq!(finished["status"], "Succeed", "{finished}");
    assert_eq!(finished["trigger"], "manual");
    assert_eq!(finished["total"], 2, "both tags: {finished}");
    let ends = berth.run_ends(execution).await;
    assert!(
        ends.iter()
            .all(|end| end.1 == "to-distribution" && end.2 == "Succeed" && end.3 == ["library"]),
        "the run's end, published as it happened: {ends:?}"
    );
    let delivered = wait_for_body(&received).await;
    assert_eq!(delivered["type"], "REPLICATION", "{delivered}");
    assert_eq!(
        delivered["event_data"]["replication"]["execution_id"], execution,
        "{delivered}"
    );
    assert_eq!(
        delivered["event_data"]["replication"]["job_status"], "Succeed",
        "{delivered}"
    );

    let peer = RemoteRegistry::new(RemoteConfig {
        url: distribution.url.clone(),
        insecure: false,
        credential: None,
    })
    .expect("a client");
    let mut tags = peer.tags("mirror/web").await.expect("tags");
    tags.sort();
    assert_eq!(tags, ["v2", "v2-slim"], "library/web became mirror/web");
    let (digest, _) = peer
        .manifest_head("mirror/web", "v2")
        .await
        .expect("answers")
        .expect("there");
    assert_eq!(digest.to_string(), index_digest);

    // Pull back from Distribution into a project that does not exist yet (replication makes
    // it, private), on a schedule (every minute).
    let pull = berth
        .create(
            "/replication/policies",
            json!({
                "name": "from-distribution",
                "src_registry": {"id": endpoint},
                "dest_namespace": "pulled",
                "dest_namespace_replace_count": 1,
                "filters": [{"type": "name", "value": "mirror/**"}, {"type": "tag", "value": "v2"}],
                "trigger": {"type": "scheduled", "trigger_settings": {"cron": "0 * * * * *"}},
            }),
        )
        .await;
    let started = Instant::now();
    let execution = loop {
        if let Some(first) = berth.executions(pull).await.first() {
            break first["id"].as_u64().expect("an id");
        }
        assert!(
            started.elapsed() < Duration::from_secs(75),
            "the schedule did not fire within 75 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let finished = berth.finished(execution, Duration::from_secs(30)).await;
    assert_eq!(finished["status"], "Succeed", "{finished}");
    assert_eq!(finished["trigger"], "scheduled");
    assert_eq!(finished["total"], 1, "only v2: {finished}");
    let (digest, _) = pusher
        .manifest_head("pulled/web", "v2")
        .await
        .expect("answers")
        .expect("pulled/web:v2 is here");
    assert_eq!(digest.to_string(), index_digest, "the same image came back");
    let (status, project) = berth.api(Method::GET, "/projects/pulled", None).await;
    assert_eq!(status, StatusCode::OK, "{project}");
    assert_eq!(project["metadata"]["public"], "false", "{project}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_that_is_down_fails_clearly_and_a_later_run_succeeds_without_duplicates() {
    let berth = Berth::start().await;
    let pusher = berth.client();
    let image = Image::oci("comes back");
    push_image(&pusher, "library/late", "v1", &image).await;
    let port = free_port();
    let endpoint = berth
        .add_endpoint("late", &format!("http://127.0.0.1:{port}"), None)
        .await;

    let (status, ping) = berth
        .api(
            Method::POST,
            "/registries/ping",
            Some(json!({"id": endpoint})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{ping}");
    let message = ping.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");

    let policy = berth
        .create(
            "/replication/policies",
            json!({
                "name": "to-late",
                "dest_registry": {"id": endpoint},
                "filters": [{"type": "name", "value": "library/late"}],
                "trigger": {"type": "manual"},
            }),
        )
        .await;
    let execution = berth.run(policy).await;
    let finished = berth.finished(execution, Duration::from_secs(30)).await;
    // Listing the source works; the copy itself fails, after retries, with the reason.
    assert_eq!(finished["status"], "Failed", "{finished}");
    assert_eq!(finished["failed"], 1, "{finished}");
    let tasks = berth.tasks(execution).await;
    let error = tasks[0]["error"].as_str().expect("an error").to_owned();
    assert!(error.contains("3 attempts"), "{error}");
    assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
    let (status, log) = berth
        .api(
            Method::GET,
            &format!(
                "/replication/executions/{execution}/tasks/{}/log",
                tasks[0]["id"]
            ),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(log.to_string().contains("Failed"), "{log}");

    // The remote comes up: a new run copies everything once.
    let distribution = Distribution::start_on(port).await;
    let execution = berth.run(policy).await;
    let finished = berth.finished(execution, Duration::from_secs(30)).await;
    assert_eq!(finished["status"], "Succeed", "{finished}");
    let sent = berth.tasks(execution).await[0]["bytes"]
        .as_u64()
        .expect("bytes");
    let expected = (image.config.len() + image.layers[0].len()) as u64;
    assert_eq!(sent, expected, "config and layer sent once");
    // And again: the remote has it all.
    let execution = berth.run(policy).await;
    berth.finished(execution, Duration::from_secs(30)).await;
    let task = &berth.tasks(execution).await[0];
    assert_eq!(task["bytes"], 0, "nothing sent twice");
    assert!(
        task["note"]
            .as_str()
            .is_some_and(|n| n.contains("already had")),
        "{task}"
    );
    let peer = RemoteRegistry::new(RemoteConfig {
        url: distribution.url.clone(),
        insecure: false,
        credential: None,
    })
    .expect("a client");
    assert_eq!(peer.tags("library/late").await.expect("tags"), ["v1"]);
    assert_eq!(
        manifest_bytes(&peer, "library/late", "v1").await,
        Bytes::from(image.manifest.clone())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_show_in_the_health_check() {
    let (source, target) = tokio::join!(Berth::start(), Berth::start());
    let endpoint = source
        .add_endpoint("wrong", &target.url(), Some(("admin", "not-the-password")))
        .await;
    let (status, answer) = source
        .api(
            Method::POST,
            "/registries/ping",
            Some(json!({"id": endpoint})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let detail = &answer["errors"][0]["detail"];
    assert_eq!(detail["reachable"], true, "{answer}");
    assert_eq!(detail["authenticated"], false, "{answer}");
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("refused") || m.contains("credentials")),
        "{answer}"
    );
    // An unsaved endpoint with the right credentials is healthy.
    let (status, answer) = source
        .api(
            Method::POST,
            "/registries/ping",
            Some(json!({"url": target.url(), "credential": {"access_key": "admin", "access_secret": ADMIN_PASSWORD}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // The secret is never answered.
    let (_, registry) = source
        .api(Method::GET, &format!("/registries/{endpoint}"), None)
        .await;
    assert_eq!(registry["credential"]["access_secret"], "*****");
    assert!(!registry.to_string().contains("not-the-password"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_checks_what_it_is_given() {
    let berth = Berth::start().await;
    let endpoint = berth.add_endpoint("peer", "http://127.0.0.1:9", None).await;
    let cases = [
        (json!({"url": "http://x"}), "/registries", "name"),
        (json!({"name": "p", "url": "ftp://x"}), "/registries", "url"),
        (
            json!({"name": "peer", "url": "http://127.0.0.1:9"}),
            "/registries",
            "exists",
        ),
        (
            json!({"name": "p", "dest_registry": {"id": 999}, "trigger": {"type": "manual"}}),
            "/replication/policies",
            "999",
        ),
        (
            json!({"name": "p", "dest_registry": {"id": endpoint}, "filters": [{"type": "tag", "value": "v[1"}]}),
            "/replication/policies",
            "v[1",
        ),
        (
            json!({"name": "p", "src_registry": {"id": endpoint}, "trigger": {"type": "event_based"}}),
            "/replication/policies",
            "push",
        ),
        (
            json!({"name": "p", "dest_registry": {"id": endpoint}, "trigger": {"type": "scheduled", "trigger_settings": {"cron": "* * * * * *"}}}),
            "/replication/policies",
            "once a minute",
        ),
        (
            json!({"name": "p", "dest_registry": {"id": endpoint}, "src_registry": {"id": endpoint}}),
            "/replication/policies",
            "not both",
        ),
    ];
    for (body, path, needle) in cases {
        let (status, answer) = berth.api(Method::POST, path, Some(body.clone())).await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::CONFLICT,
            "{body} → {status} {answer}"
        );
        assert!(answer.to_string().contains(needle), "{body} → {answer}");
    }
    let policy = berth
        .create(
            "/replication/policies",
            json!({"name": "ok", "dest_registry": {"id": endpoint}}),
        )
        .await;
    let (status, answer) = berth
        .api(Method::DELETE, &format!("/registries/{endpoint}"), None)
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "in use: {answer}");

    // Only system administrators.
    let (status, _) = berth
        .api(
            Method::POST,
            "/users",
            Some(json!({"username": "dev", "password": "Dev-password-1", "email": "dev@example.com", "realname": "Dev"})),
        )
        .await;
    assert!(status.is_success());
    let (status, _, _) = berth
        .api_as(("dev", "Dev-password-1"), Method::GET, "/registries", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let anonymous = berth
        .client
        .get(format!("{}/api/v2.0/replication/policies", berth.url()))
        .send()
        .await
        .expect("answers");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // A disabled policy does not run; a stopped execution's pending tasks never start.
    let (status, _) = berth
        .api(
            Method::PUT,
            &format!("/replication/policies/{policy}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = berth
        .api(
            Method::POST,
            "/replication/executions",
            Some(json!({"policy_id": policy})),
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_execution_starts_no_more_tasks() {
    let berth = Berth::start().await;
    let pusher = berth.client();
    for n in 0..12 {
        push_image(
            &pusher,
            "library/many",
            &format!("v{n}"),
            &Image::oci(&format!("many {n}")),
        )
        .await;
    }
    // Nothing listens there: every attempt fails at once and waits to be tried again.
    let endpoint = berth
        .add_endpoint(
            "nowhere",
            &format!("http://127.0.0.1:{}", free_port()),
            None,
        )
        .await;
    let policy = berth
        .create(
            "/replication/policies",
            json!({"name": "stoppable", "dest_registry": {"id": endpoint}}),
        )
        .await;
    let execution = berth.run(policy).await;
    let (status, answer) = berth
        .api(
            Method::PUT,
            &format!("/replication/executions/{execution}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let finished = berth.finished(execution, Duration::from_secs(30)).await;
    assert_eq!(finished["status"], "Stopped", "{finished}");
    assert_eq!(finished["in_progress"], 0, "{finished}");
    let tasks = berth.tasks(execution).await;
    let stopped = tasks.iter().filter(|t| t["status"] == "Stopped").count();
    assert!(stopped >= 1, "{tasks:?}");
    assert!(
        tasks
            .iter()
            .all(|t| t["status"] == "Stopped" || t["status"] == "Failed"),
        "{tasks:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_whose_worker_stopped_mid_attempt_is_taken_over_by_a_redelivered_job() {
    use berth_core::replication::{Execution, IdKind, Operation, Task, TaskStatus, TriggerKind};
    use berth_replication::engine::{Job, TASK_LEASE_SECONDS, unix_now};

    let berth = Berth::start().await;
    let distribution = Distribution::start().await;
    push_image(&berth.client(), "library/lease", "v1", &Image::oci("lease")).await;
    let endpoint = berth
        .add_endpoint("lease-target", &distribution.url, None)
        .await;
    let policy = berth
        .create(
            "/replication/policies",
            json!({"name": "lease", "dest_registry": {"id": endpoint}}),
        )
        .await;
    // As a Lambda invocation that timed out would leave them: tasks marked running.
    let replicator = &berth.replication.replicator;
    let store = replicator.store();
    let execution = Execution {
        id: store.next_id(IdKind::Execution).await.expect("an id"),
        policy_id: policy,
        trigger: TriggerKind::Manual,
        start_time: unix_now(),
        planned: true,
        error: None,
        stop_requested: false,
    };
    store.put_execution(&execution).await.expect("stored");
    let now = unix_now();
    let running = |id: u64, attempts: u32, started: u64| Task {
        id,
        execution_id: execution.id,
        operation: Operation::Copy,
        source_repository: "library/lease".into(),
        destination_repository: "library/lease".into(),
        reference: "v1".into(),
        status: TaskStatus::Running,
        attempts,
        start_time: Some(started),
        end_time: None,
        error: None,
        bytes: 0,
        note: None,
        attempt_started: Some(started),
    };
    let stale = running(
        store.next_id(IdKind::Task).await.expect("id"),
        1,
        now - TASK_LEASE_SECONDS - 60,
    );
    let busy = running(store.next_id(IdKind::Task).await.expect("id"), 1, now - 60);
    let hopeless = running(
        store.next_id(IdKind::Task).await.expect("id"),
        3,
        now - TASK_LEASE_SECONDS - 60,
    );
    for task in [&stale, &busy, &hopeless] {
        store.put_task(task).await.expect("stored");
        replicator
            .handle(Job::Task {
                execution: execution.id,
                task: task.id,
            })
            .await
            .expect("handled");
    }
    let after = |id| async move {
        store
            .task(execution.id, id)
            .await
            .expect("read")
            .expect("there")
    };
    let taken = after(stale.id).await;
    assert_eq!(taken.status, TaskStatus::Succeeded, "{taken:?}");
    assert_eq!(taken.attempts, 2);
    assert!(taken.bytes > 0);
    assert_eq!(
        after(busy.id).await.status,
        TaskStatus::Running,
        "a task within its lease is left to its worker"
    );
    let failed = after(hopeless.id).await;
    assert_eq!(failed.status, TaskStatus::Failed);
    assert!(
        failed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("stopped")),
        "{failed:?}"
    );
}
