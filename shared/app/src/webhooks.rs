//! Webhooks: the policy use cases, and [`WebhookSender`], the subscriber that delivers each
//! event a project's enabled policies follow to their targets, from background tasks, with
//! retries and a record of every delivery. A slow or failing target never slows a push or a
//! pull: publishing only queues the event.

use std::sync::Arc;
use std::time::Duration;

use berth_auth::unix_now;
use berth_core::audit::project_of;
use berth_core::events::{AccountResource, Operation};
use berth_core::webhooks::{
    Delivery, DeliveryStatus, PayloadFormat, WebhookEventType, WebhookPolicy, WebhookStore,
    WebhookTarget,
};
use berth_core::{ErrorCode, Event, EventKind, EventSink, RegistryError, Result};
use chrono::{DateTime, SecondsFormat};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::Accounts;
use crate::permission::{Caller, bad_request, not_found};

/// How deliveries are tried.
#[derive(Debug, Clone, Copy)]
pub struct Retries {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The pause before the second attempt; each later pause is four times the one before.
    pub first_pause: Duration,
    /// How long one attempt may take.
    pub timeout: Duration,
}

impl Default for Retries {
    fn default() -> Self {
        Self {
            attempts: 4,
            first_pause: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Delivers events to the targets of the policies that follow them.
#[derive(Debug, Clone)]
pub struct WebhookSender {
    events: mpsc::UnboundedSender<Event>,
}

impl WebhookSender {
    /// Starts the sender on the current runtime.
    pub fn start(store: Arc<dyn WebhookStore>, retries: Retries) -> Result<Self> {
        let client = |insecure| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(retries.timeout)
                .tls_danger_accept_invalid_certs(insecure)
                .user_agent(concat!("berth-webhook/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| RegistryError::internal(format!("the webhook HTTP client: {e}")))
        };
        let clients = Arc::new(Clients {
            verifying: client(false)?,
            trusting: client(true)?,
        });
        let (events, received) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(store, clients, retries, received));
        Ok(Self { events })
    }
}

impl EventSink for WebhookSender {
    fn publish(&self, event: &Event) {
        if WebhookEventType::of(event).is_some() && event.repository().is_some() {
            self.events.send(event.clone()).ok();
        }
    }
}

struct Clients {
    verifying: reqwest::Client,
    trusting: reqwest::Client,
}

async fn dispatch(
    store: Arc<dyn WebhookStore>,
    clients: Arc<Clients>,
    retries: Retries,
    mut received: mpsc::UnboundedReceiver<Event>,
) {
    while let Some(event) = received.recv().await {
        let (Some(kind), Some(repository)) = (WebhookEventType::of(&event), event.repository())
        else {
            continue;
        };
        let project = project_of(repository.as_str());
        let policies = match store.webhooks(&project).await {
            Ok(policies) => policies,
            Err(error) => {
                tracing::error!(%error, project, "the webhook policies could not be read: an event was not delivered");
                continue;
            }
        };
        for policy in policies
            .into_iter()
            .filter(|policy| policy.enabled && policy.event_types.contains(&kind))
        {
            for (index, target) in policy.targets.clone().into_iter().enumerate() {
                let delivery = Delivery {
                    id: delivery_id(&event, policy.id, index, &target.address),
                    project: project.clone(),
                    policy_id: policy.id,
                    event_type: kind,
                    address: target.address.clone(),
                    status: DeliveryStatus::Running,
                    attempts: 0,
                    http_code: None,
                    error: None,
                    created_ms: event.at_ms,
                    updated_ms: event.at_ms,
                };
                let body = payload(&event, kind, &policy, &target, delivery.id);
                tokio::spawn(deliver(
                    store.clone(),
                    clients.clone(),
                    retries,
                    target,
                    delivery,
                    body,
                ));
            }
        }
    }
}

/// Tries one delivery until it succeeds or its attempts are used up, recording each attempt.
async fn deliver(
    store: Arc<dyn WebhookStore>,
    clients: Arc<Clients>,
    retries: Retries,
    target: WebhookTarget,
    mut delivery: Delivery,
    body: Value,
) {
    let client = if target.skip_cert_verify {
        &clients.trusting
    } else {
        &clients.verifying
    };
    let content_type = match target.payload_format {
        PayloadFormat::Default => "application/json",
        PayloadFormat::CloudEvents => "application/cloudevents+json",
    };
    let mut pause = retries.first_pause;
    for attempt in 1..=retries.attempts.max(1) {
        let mut request = client
            .post(&target.address)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body.to_string());
        if let Some(auth) = &target.auth_header {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        let outcome = request.send().await;
        delivery.attempts = attempt;
        delivery.updated_ms = unix_now().saturating_mul(1000);
        match outcome {
            Ok(answer) if answer.status().is_success() => {
                delivery.http_code = Some(answer.status().as_u16());
                delivery.status = DeliveryStatus::Success;
                delivery.error = None;
            }
            Ok(answer) => {
                delivery.http_code = Some(answer.status().as_u16());
                delivery.error = Some(format!("the target answered {}", answer.status()));
            }
            Err(error) => {
                delivery.http_code = None;
                delivery.error = Some(format!("the target could not be reached: {error}"));
            }
        }
        if delivery.status != DeliveryStatus::Success && attempt == retries.attempts.max(1) {
            delivery.status = DeliveryStatus::Error;
        }
        if let Err(error) = store.record_delivery(&delivery).await {
            tracing::error!(%error, delivery = delivery.id, "a webhook delivery could not be recorded");
        }
        if delivery.status != DeliveryStatus::Running {
            break;
        }
        tokio::time::sleep(pause).await;
        pause = pause.saturating_mul(4);
    }
    if delivery.status == DeliveryStatus::Error {
        tracing::warn!(
            address = delivery.address,
            attempts = delivery.attempts,
            error = delivery.error.as_deref().unwrap_or_default(),
            "a webhook delivery failed"
        );
    }
}

/// The same event to the same target (the policy's `index`th) of the same policy is the same
/// delivery.
fn delivery_id(event: &Event, policy: u64, index: usize, address: &str) -> u64 {
    let mut hash = Sha256::new();
    hash.update(event.request_id.as_bytes());
    hash.update([0]);
    hash.update(serde_json::to_vec(&event.kind).unwrap_or_default());
    hash.update(policy.to_be_bytes());
    hash.update(index.to_be_bytes());
    hash.update(address.as_bytes());
    let hash = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(first) % (1 << 53)
}

/// The body of a delivery: Harbor's default JSON, or a CloudEvents 1.0 event around the same
/// data.
pub fn payload(
    event: &Event,
    kind: WebhookEventType,
    policy: &WebhookPolicy,
    target: &WebhookTarget,
    delivery_id: u64,
) -> Value {
    let mut resource = json!({});
    let repository = match &event.kind {
        EventKind::ManifestPushed {
            repository,
            digest,
            tag,
            ..
        } => {
            resource["digest"] = json!(digest.as_str());
            if let Some(tag) = tag {
                resource["tag"] = json!(tag.as_str());
            }
            Some(repository)
        }
        EventKind::ManifestPulled {
            repository,
            digest,
            reference,
        } => {
            resource["digest"] = json!(digest.as_str());
            if let berth_core::Reference::Tag(tag) = reference {
                resource["tag"] = json!(tag.as_str());
            }
            Some(repository)
        }
        EventKind::ManifestDeleted { repository, digest } => {
            resource["digest"] = json!(digest.as_str());
            Some(repository)
        }
        EventKind::TagDeleted { repository, tag } => {
            resource["tag"] = json!(tag.as_str());
            Some(repository)
        }
        _ => None,
    };
    let mut data = json!({ "resources": [resource] });
    if let Some(repository) = repository {
        let full = repository.as_str();
        resource_url(&mut data, full);
        let (namespace, name) = full.split_once('/').unwrap_or((full, full));
        data["repository"] = json!({
            "name": name,
            "namespace": namespace,
            "repo_full_name": full,
        });
    }
    let occur_at = event.at_ms / 1000;
    match target.payload_format {
        PayloadFormat::Default => json!({
            "type": kind.as_str(),
            "occur_at": occur_at,
            "operator": event.actor.name(),
            "event_data": data,
        }),
        PayloadFormat::CloudEvents => {
            let time = i64::try_from(event.at_ms)
                .ok()
                .and_then(DateTime::from_timestamp_millis)
                .map(|time| time.to_rfc3339_opts(SecondsFormat::Millis, true));
            json!({
                "specversion": "1.0",
                "id": delivery_id.to_string(),
                "source": format!("/projects/{}/webhook/policies/{}", policy.project, policy.id),
                "type": cloud_event_type(kind),
                "time": time,
                "datacontenttype": "application/json",
                "operator": event.actor.name(),
                "data": data,
            })
        }
    }
}

fn resource_url(data: &mut Value, repository: &str) {
    if let Some(resource) = data["resources"].get_mut(0) {
        let url = match (resource.get("tag"), resource.get("digest")) {
            (Some(tag), _) => format!("{repository}:{}", tag.as_str().unwrap_or_default()),
            (None, Some(digest)) => format!("{repository}@{}", digest.as_str().unwrap_or_default()),
            (None, None) => repository.to_owned(),
        };
        resource["resource_url"] = json!(url);
    }
}

/// Harbor's CloudEvents types.
fn cloud_event_type(kind: WebhookEventType) -> &'static str {
    match kind {
        WebhookEventType::PushArtifact => "harbor.artifact.pushed",
        WebhookEventType::PullArtifact => "harbor.artifact.pulled",
        WebhookEventType::DeleteArtifact => "harbor.artifact.deleted",
        WebhookEventType::Replication => "harbor.replication.status.changed",
        WebhookEventType::QuotaExceed => "harbor.quota.exceed",
        WebhookEventType::QuotaWarning => "harbor.quota.warned",
    }
}

/// A policy as the management API receives it, before it is checked.
#[derive(Debug, Clone)]
pub struct WebhookSpec {
    pub name: String,
    pub description: String,
    pub targets: Vec<WebhookTarget>,
    pub event_types: Vec<WebhookEventType>,
    pub enabled: bool,
}

fn check(spec: &WebhookSpec) -> Result<()> {
    if spec.name.trim().is_empty() || spec.name.chars().count() > 256 {
        return Err(bad_request(
            "a webhook policy's name is 1 to 256 characters",
        ));
    }
    if spec.targets.is_empty() {
        return Err(bad_request("a webhook policy needs at least one target"));
    }
    for target in &spec.targets {
        let valid = reqwest::Url::parse(&target.address)
            .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.host_str().is_some());
        if !valid {
            return Err(bad_request(format!(
                "a webhook target's address is an http:// or https:// URL, not {:?}",
                target.address
            )));
        }
    }
    if spec.event_types.is_empty() {
        return Err(bad_request(
            "a webhook policy follows at least one event type",
        ));
    }
    Ok(())
}

impl Accounts {
    fn hooks(&self) -> Result<&dyn WebhookStore> {
        self.webhook_store().ok_or_else(|| {
            RegistryError::new(ErrorCode::Unsupported, "this deployment has no webhooks")
        })
    }

    pub async fn create_webhook(
        &self,
        caller: &Caller,
        project: &str,
        spec: WebhookSpec,
    ) -> Result<WebhookPolicy> {
        check(&spec)?;
        let now = unix_now();
        let mut policy = WebhookPolicy {
            id: 0,
            project: project.to_owned(),
            name: spec.name,
            description: spec.description,
            targets: spec.targets,
            event_types: spec.event_types,
            enabled: spec.enabled,
            created_at: now,
            updated_at: now,
        };
        policy.id = self
            .hooks()?
            .create_webhook(&policy)
            .await?
            .ok_or_else(|| {
                RegistryError::new(
                    ErrorCode::Conflict,
                    format!(
                        "project {project:?} already has a webhook policy named {:?}",
                        policy.name
                    ),
                )
            })?;
        self.webhook_changed(caller, &policy, Operation::Create);
        Ok(policy)
    }

    pub async fn webhooks(&self, project: &str) -> Result<Vec<WebhookPolicy>> {
        self.hooks()?.webhooks(project).await
    }

    pub async fn webhook(&self, project: &str, id: u64) -> Result<WebhookPolicy> {
        self.hooks()?
            .webhook(project, id)
            .await?
            .ok_or_else(|| not_found(&format!("webhook policy {id} of project {project:?}")))
    }

    pub async fn update_webhook(
        &self,
        caller: &Caller,
        project: &str,
        id: u64,
        spec: WebhookSpec,
    ) -> Result<()> {
        check(&spec)?;
        let mut policy = self.webhook(project, id).await?;
        policy.name = spec.name;
        policy.description = spec.description;
        policy.targets = spec.targets;
        policy.event_types = spec.event_types;
        policy.enabled = spec.enabled;
        policy.updated_at = unix_now();
        if !self.hooks()?.update_webhook(&policy).await? {
            return Err(RegistryError::new(
                ErrorCode::Conflict,
                format!(
                    "project {project:?} already has a webhook policy named {:?}",
                    policy.name
                ),
            ));
        }
        self.webhook_changed(caller, &policy, Operation::Update);
        Ok(())
    }

    pub async fn delete_webhook(&self, caller: &Caller, project: &str, id: u64) -> Result<()> {
        let policy = self.webhook(project, id).await?;
        if !self.hooks()?.delete_webhook(project, id).await? {
            return Err(not_found(&format!(
                "webhook policy {id} of project {project:?}"
            )));
        }
        self.webhook_changed(caller, &policy, Operation::Delete);
        Ok(())
    }

    /// A policy's deliveries, newest first.
    pub async fn deliveries(&self, project: &str, id: u64, limit: usize) -> Result<Vec<Delivery>> {
        self.webhook(project, id).await?;
        self.hooks()?.deliveries(project, id, limit).await
    }

    fn webhook_changed(&self, caller: &Caller, policy: &WebhookPolicy, operation: Operation) {
        self.changed(
            caller,
            AccountResource::Webhook,
            operation,
            format!("{}/{}", policy.project, policy.name),
        );
    }
}
