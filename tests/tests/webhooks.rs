//! Webhooks over real HTTP: policies made through the management API, a push delivered to a
//! receiver on loopback in Harbor's default JSON and as a CloudEvent, a receiver answering 500
//! tried again and then recorded as failed, and the push answered before any delivery was;
//! a push refused by the project's storage quota delivered as `QUOTA_EXCEED`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::post;
use berth_core::EventBus;
use berth_runtime::{Retries, Routes, WebhookSender};
use berth_tests::authed::{ADMIN_PASSWORD, authed_parts, serve_on_loopback};
use berth_tests::{media, sha256};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

/// What the receiver was sent: the path, the `Authorization` and `Content-Type` headers and
/// the body.
type Received = Arc<Mutex<Vec<(String, String, String, Value)>>>;

struct Receiver {
    received: Received,
    /// Closed until the test opens it: the `/ok` target answers nothing before.
    gate: Arc<Semaphore>,
}

async fn record(receiver: &Receiver, path: &str, headers: &HeaderMap, body: &str) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    receiver
        .received
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((
            path.to_owned(),
            header("authorization"),
            header("content-type"),
            serde_json::from_str(body).unwrap_or(Value::Null),
        ));
}

async fn start_receiver() -> (SocketAddr, Received, Arc<Semaphore>) {
    let receiver = Arc::new(Receiver {
        received: Arc::default(),
        gate: Arc::new(Semaphore::new(0)),
    });
    let router = axum::Router::new()
        .route(
            "/ok",
            post(
                |State(receiver): State<Arc<Receiver>>, headers: HeaderMap, body: String| async move {
                    let _open = receiver.gate.acquire().await.expect("the gate");
                    record(&receiver, "/ok", &headers, &body).await;
                    AxumStatus::OK
                },
            ),
        )
        .route(
            "/fail",
            post(
                |State(receiver): State<Arc<Receiver>>, headers: HeaderMap, body: String| async move {
                    record(&receiver, "/fail", &headers, &body).await;
                    AxumStatus::INTERNAL_SERVER_ERROR
                },
            ),
        )
        .with_state(receiver.clone());
    let (addr, _) = serve_on_loopback(router).await;
    (addr, receiver.received.clone(), receiver.gate.clone())
}

struct Berth {
    addr: SocketAddr,
    client: reqwest::Client,
    _data_dir: tempfile::TempDir,
}

impl Berth {
    async fn start() -> Self {
        let parts = authed_parts().await;
        let webhooks = parts
            .stores
            .webhooks
            .clone()
            .expect("embedded storage keeps webhooks");
        let retries = Retries {
            attempts: 3,
            first_pause: Duration::from_millis(50),
            timeout: Duration::from_secs(30),
        };
        let bus = Arc::new(EventBus::new().subscribe(Arc::new(
            WebhookSender::start(webhooks.clone(), retries).expect("the sender starts"),
        )));
        let quotas = parts
            .stores
            .quotas
            .clone()
            .expect("embedded storage keeps quotas");
        let registry = Arc::new(
            berth_core::Registry::new(parts.stores.blobs.clone(), parts.stores.metadata.clone())
                .with_events(bus.clone())
                .with_quotas(quotas.clone()),
        );
        let router = Routes::new()
            .registry(registry, berth_runtime::Settings::default())
            .accounts(
                &parts.auth,
                parts.stores.accounts.clone(),
                parts.stores.metadata.clone(),
            )
            .events(bus)
            .webhooks(Some(webhooks))
            .quotas(Some(quotas))
            .build();
        let (addr, _) = serve_on_loopback(router).await;
        Self {
            addr,
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("a client"),
            _data_dir: parts.data_dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn api(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, self.url(&format!("/api/v2.0{path}")))
            .basic_auth("admin", Some(ADMIN_PASSWORD));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Pushes a config-only image as the admin; the manifest PUT's status (the upload's if
    /// it failed).
    async fn push(&self, repository: &str, tag: &str) -> StatusCode {
        let scope = format!("repository:{repository}:pull,push");
        let token: Value = self
            .client
            .get(self.url("/service/token"))
            .query(&[("service", "berth"), ("scope", scope.as_str())])
            .basic_auth("admin", Some(ADMIN_PASSWORD))
            .send()
            .await
            .expect("a token")
            .json()
            .await
            .expect("JSON");
        let token = token["token"].as_str().expect("a token");
        let config = format!("{{\"repository\":\"{repository}\",\"tag\":\"{tag}\"}}").into_bytes();
        let digest = sha256(&config);
        let upload = self
            .client
            .post(self.url(&format!("/v2/{repository}/blobs/uploads/?digest={digest}")))
            .bearer_auth(token)
            .body(config.clone())
            .send()
            .await
            .expect("an upload");
        if upload.status() != StatusCode::CREATED {
            return upload.status();
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": digest, "size": config.len()},
            "layers": [],
        });
        self.client
            .put(self.url(&format!("/v2/{repository}/manifests/{tag}")))
            .bearer_auth(token)
            .header("Content-Type", media::OCI_MANIFEST)
            .body(manifest.to_string())
            .send()
            .await
            .expect("a manifest push")
            .status()
    }

    /// The deliveries of policy `id` once `ready` holds of them.
    async fn deliveries(&self, id: u64, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let path = format!("/projects/team/webhook/policies/{id}/executions");
        for _ in 0..200 {
            let (status, answer) = self.api(Method::GET, &path, None).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            let deliveries = answer.as_array().cloned().unwrap_or_default();
            if ready(&deliveries) {
                return deliveries;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{path}: the deliveries did not settle");
    }
}

fn policy(name: &str, targets: Value) -> Value {
    json!({ "name": name, "targets": targets, "event_types": ["PUSH_ARTIFACT"], "enabled": true })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_is_delivered_retried_and_recorded_without_waiting_for_the_targets() {
    let berth = Berth::start().await;
    let (receiver, received, gate) = start_receiver().await;
    let (status, _) = berth
        .api(
            Method::POST,
            "/projects",
            Some(json!({"project_name": "team", "metadata": {"public": "false"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // Bad policies are refused with the reason.
    for (bad, says) in [
        (
            policy("x", json!([{"address": "ftp://hooks.example"}])),
            "http:// or https://",
        ),
        (
            json!({"name": "x", "targets": [{"address": "http://a.example"}], "event_types": ["PUSHED"]}),
            "PUSH_ARTIFACT",
        ),
        (
            policy(
                "x",
                json!([{"type": "slack", "address": "http://a.example"}]),
            ),
            "slack",
        ),
    ] {
        let (status, answer) = berth
            .api(Method::POST, "/projects/team/webhook/policies", Some(bad))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(answer.to_string().contains(says), "{answer}");
    }

    let ok = format!("http://{receiver}/ok");
    let (status, made) = berth
        .api(
            Method::POST,
            "/projects/team/webhook/policies",
            Some(policy(
                "ci",
                json!([
                    {"type": "http", "address": ok, "auth_header": "Bearer hook-secret"},
                    {"address": ok, "payload_format": "CloudEvents"},
                ]),
            )),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let ci = made["id"].as_u64().expect("an id");
    assert!(
        !made.to_string().contains("hook-secret"),
        "the auth header is never answered"
    );
    let (status, made) = berth
        .api(
            Method::POST,
            "/projects/team/webhook/policies",
            Some(policy(
                "broken",
                json!([{"address": format!("http://{receiver}/fail")}]),
            )),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let broken = made["id"].as_u64().expect("an id");
    let (status, _) = berth
        .api(
            Method::POST,
            "/projects/team/webhook/policies",
            Some(policy("ci", json!([{"address": ok}]))),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "one name per project");

    // The /ok target answers nothing until the push is done: the push does not wait for it.
    assert_eq!(berth.push("team/app", "v1").await, StatusCode::CREATED);
    assert!(
        received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .all(|(path, ..)| path != "/ok"),
        "nothing was delivered to /ok before the push was answered"
    );
    gate.add_permits(10);

    let failed = berth
        .deliveries(broken, |d| d.len() == 1 && d[0]["status"] == "Error")
        .await;
    assert_eq!(failed[0]["extra_attrs"]["http_code"], 500);
    assert_eq!(failed[0]["extra_attrs"]["attempts"], 3);
    assert_eq!(failed[0]["extra_attrs"]["event_type"], "PUSH_ARTIFACT");
    assert!(failed[0]["end_time"].is_string());
    let delivered = berth
        .deliveries(ci, |d| {
            d.len() == 2 && d.iter().all(|delivery| delivery["status"] == "Success")
        })
        .await;
    assert!(
        delivered
            .iter()
            .all(|d| d["extra_attrs"]["http_code"] == 200)
    );

    let received = received
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let to = |path: &str| received.iter().filter(|r| r.0 == path).count();
    assert_eq!(to("/fail"), 3, "tried three times");
    assert_eq!(to("/ok"), 2, "once to each target");
    let default = received
        .iter()
        .find(|r| r.0 == "/ok" && r.2 == "application/json")
        .expect("Harbor's default payload");
    assert_eq!(default.1, "Bearer hook-secret");
    assert_eq!(default.3["type"], "PUSH_ARTIFACT");
    assert_eq!(default.3["operator"], "admin");
    let data = &default.3["event_data"];
    assert_eq!(data["repository"]["repo_full_name"], "team/app");
    assert_eq!(data["repository"]["namespace"], "team");
    assert_eq!(data["resources"][0]["tag"], "v1");
    assert_eq!(data["resources"][0]["resource_url"], "team/app:v1");
    assert!(
        data["resources"][0]["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
    let cloud = received
        .iter()
        .find(|r| r.2 == "application/cloudevents+json")
        .expect("a CloudEvent");
    assert_eq!(cloud.1, "", "no auth header configured for it");
    assert_eq!(cloud.3["specversion"], "1.0");
    assert_eq!(cloud.3["type"], "harbor.artifact.pushed");
    assert_eq!(
        cloud.3["source"],
        format!("/projects/team/webhook/policies/{ci}")
    );
    assert_eq!(cloud.3["data"], *data);

    // A disabled policy is kept and sends nothing; deleting it removes its deliveries.
    let mut change = policy(
        "broken",
        json!([{"address": format!("http://{receiver}/fail")}]),
    );
    change["enabled"] = json!(false);
    let path = format!("/projects/team/webhook/policies/{broken}");
    let (status, _) = berth.api(Method::PUT, &path, Some(change)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, read) = berth.api(Method::GET, &path, None).await;
    assert_eq!(read["enabled"], false);
    let (status, _) = berth.api(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = berth.api(Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_past_the_storage_limit_is_delivered_as_quota_exceed() {
    let berth = Berth::start().await;
    let (receiver, received, gate) = start_receiver().await;
    gate.add_permits(100);
    let (status, answer) = berth
        .api(
            Method::POST,
            "/projects",
            Some(json!({"project_name": "team", "storage_limit": 16})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let mut hooked = policy(
        "quota",
        json!([{"address": format!("http://{receiver}/ok")}]),
    );
    hooked["event_types"] = json!(["QUOTA_EXCEED"]);
    let (status, made) = berth
        .api(
            Method::POST,
            "/projects/team/webhook/policies",
            Some(hooked),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let (_, listed) = berth
        .api(Method::GET, "/projects/team/webhook/policies", None)
        .await;
    let id = listed[0]["id"].as_u64().expect("an id");

    // The config blob alone is past 16 bytes: refused with the usage and the limit.
    let status = berth.push("team/app", "v1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, summary) = berth.api(Method::GET, "/projects/team/summary", None).await;
    assert_eq!(
        summary["quota"],
        json!({"hard": {"storage": 16}, "used": {"storage": 0}})
    );

    let delivered = berth
        .deliveries(id, |d| d.len() == 1 && d[0]["status"] == "Success")
        .await;
    assert_eq!(delivered[0]["extra_attrs"]["event_type"], "QUOTA_EXCEED");
    let received = received
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let payload = &received[0].3;
    assert_eq!(payload["type"], "QUOTA_EXCEED");
    assert_eq!(
        payload["event_data"]["repository"]["repo_full_name"],
        "team/app"
    );
    let details = payload["event_data"]["custom_attributes"]["Details"]
        .as_str()
        .expect("details");
    assert!(details.contains("limit of 16 bytes"), "{details}");
}
