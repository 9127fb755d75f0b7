//! Webhooks: the policy use cases, and their delivery. [`Deliverer`] turns an event into
//! [`WebhookJob`]s (one per target of each enabled policy that follows it) and makes one
//! attempt of a job at a time, recording it; what carries a job between attempts is the
//! caller's: [`WebhookSender`] in-process, with pauses between attempts, or a queue in AWS
//! (the events function). A slow or failing target never slows a push or a pull: publishing
//! only queues the event. Delivery is at least once: a receiver may see an event again, under
//! the same delivery id.

use std::sync::Arc;
use std::time::Duration;

use berth_auth::unix_now;
use berth_core::events::{AccountResource, Operation};
use berth_core::webhooks::{
    Delivery, DeliveryStatus, PayloadFormat, WebhookEventType, WebhookPolicy, WebhookStore,
    WebhookTarget,
};
use berth_core::{ErrorCode, Event, EventKind, EventSink, RegistryError, Result};
use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};
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

impl Retries {
    /// The pause after failed attempt `attempt` (from 1), or `None` when it was the last.
    pub fn pause_after(&self, attempt: u32) -> Option<Duration> {
        (attempt < self.attempts.max(1)).then(|| {
            let growth = 4u32.saturating_pow(attempt.saturating_sub(1));
            self.first_pause.saturating_mul(growth)
        })
    }
}

/// One event for one target of one policy, between its attempts. It names the policy and
/// the target instead of holding them: each attempt reads the policy again, so a policy
/// disabled or deleted meanwhile stops its deliveries, and a target's auth header never
/// travels in a queue message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookJob {
    pub project: String,
    pub policy_id: u64,
    /// The target's place in the policy's targets.
    pub target: usize,
    pub event: Event,
    /// The attempt this job makes, from 1.
    pub attempt: u32,
}

/// What carries webhook jobs between attempts, out of process (in AWS, the events function's
/// queue).
#[async_trait::async_trait]
pub trait WebhookQueue: Send + Sync + 'static {
    /// Queues `job`, to be attempted after `delay`.
    async fn enqueue(&self, job: &WebhookJob, delay: Duration) -> Result<()>;
}

/// Makes deliveries' attempts and records them.
pub struct Deliverer {
    store: Arc<dyn WebhookStore>,
    retries: Retries,
    verifying: reqwest::Client,
    trusting: reqwest::Client,
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer")
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

impl Deliverer {
    pub fn new(store: Arc<dyn WebhookStore>, retries: Retries) -> Result<Self> {
        let client = |insecure| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(retries.timeout)
                .tls_danger_accept_invalid_certs(insecure)
                .user_agent(concat!("berth-webhook/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| RegistryError::internal(format!("the webhook HTTP client: {e}")))
        };
        Ok(Self {
            store,
            retries,
            verifying: client(false)?,
            trusting: client(true)?,
        })
    }

    pub fn retries(&self) -> Retries {
        self.retries
    }

    /// The first attempts of the deliveries of `events`: one per target of each enabled
    /// policy of an event's projects that follows its type. Each project's policies are read
    /// once.
    pub async fn jobs(&self, events: &[Event]) -> Result<Vec<WebhookJob>> {
        let mut policies: std::collections::HashMap<String, Vec<WebhookPolicy>> =
            std::collections::HashMap::new();
        let mut jobs = Vec::new();
        for event in events {
            let Some(kind) = WebhookEventType::of(event) else {
                continue;
            };
            for project in event.projects() {
                if !policies.contains_key(&project) {
                    let read = self.store.webhooks(&project).await?;
                    policies.insert(project.clone(), read);
                }
                let followers = policies[&project]
                    .iter()
                    .filter(|policy| policy.enabled && policy.event_types.contains(&kind));
                for policy in followers {
                    jobs.extend((0..policy.targets.len()).map(|target| WebhookJob {
                        project: project.clone(),
                        policy_id: policy.id,
                        target,
                        event: event.clone(),
                        attempt: 1,
                    }));
                }
            }
        }
        Ok(jobs)
    }

    /// Makes `job`'s attempt and records it. Returns the pause before the next attempt when
    /// this one failed and attempts remain; `None` when the delivery is over (delivered,
    /// failed for good, or its policy no longer sends it). An error is a policy that could
    /// not be read: nothing was sent.
    pub async fn attempt(&self, job: &WebhookJob) -> Result<Option<Duration>> {
        let Some(kind) = WebhookEventType::of(&job.event) else {
            return Ok(None);
        };
        let policy = self.store.webhook(&job.project, job.policy_id).await?;
        let Some((policy, target)) = policy
            .filter(|policy| policy.enabled && policy.event_types.contains(&kind))
            .and_then(|policy| {
                let target = policy.targets.get(job.target).cloned()?;
                Some((policy, target))
            })
        else {
            tracing::debug!(
                project = job.project,
                policy = job.policy_id,
                "a webhook delivery stopped: its policy or target is gone or disabled"
            );
            return Ok(None);
        };
        let id = delivery_id(&job.event, policy.id, job.target, &target.address);
        let body = payload(&job.event, kind, &policy, &target, id);
        let mut delivery = Delivery {
            id,
            project: job.project.clone(),
            policy_id: policy.id,
            event_type: kind,
            address: target.address.clone(),
            status: DeliveryStatus::Running,
            attempts: job.attempt,
            http_code: None,
            error: None,
            created_ms: job.event.at_ms,
            updated_ms: job.event.at_ms,
        };
        let client = if target.skip_cert_verify {
            &self.trusting
        } else {
            &self.verifying
        };
        let content_type = match target.payload_format {
            PayloadFormat::Default => "application/json",
            PayloadFormat::CloudEvents => "application/cloudevents+json",
        };
        let mut request = client
            .post(&target.address)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body.to_string());
        if let Some(auth) = &target.auth_header {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        let outcome = request.send().await;
        delivery.updated_ms = unix_now().saturating_mul(1000);
        match outcome {
            Ok(answer) if answer.status().is_success() => {
                delivery.http_code = Some(answer.status().as_u16());
                delivery.status = DeliveryStatus::Success;
            }
            Ok(answer) => {
                delivery.http_code = Some(answer.status().as_u16());
                delivery.error = Some(format!("the target answered {}", answer.status()));
            }
            Err(error) => {
                delivery.error = Some(format!("the target could not be reached: {error}"));
            }
        }
        let pause = match delivery.status {
            DeliveryStatus::Success => None,
            _ => self.retries.pause_after(job.attempt),
        };
        if delivery.status != DeliveryStatus::Success && pause.is_none() {
            delivery.status = DeliveryStatus::Error;
            tracing::warn!(
                address = delivery.address,
                attempts = delivery.attempts,
                error = delivery.error.as_deref().unwrap_or_default(),
                "a webhook delivery failed"
            );
        }
        // The attempt was made: failing to record it must not make it again.
        if let Err(error) = self.store.record_delivery(&delivery).await {
            tracing::error!(%error, delivery = delivery.id, "a webhook delivery could not be recorded");
        }
        Ok(pause)
    }
}

/// Delivers events in-process: each delivery runs on its own task, pausing between attempts.
#[derive(Debug, Clone)]
pub struct WebhookSender {
    events: mpsc::UnboundedSender<Event>,
}

impl WebhookSender {
    /// Starts the sender on the current runtime.
    pub fn start(store: Arc<dyn WebhookStore>, retries: Retries) -> Result<Self> {
        let deliverer = Arc::new(Deliverer::new(store, retries)?);
        let (events, received) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(deliverer, received));
        Ok(Self { events })
    }
}

impl EventSink for WebhookSender {
    fn publish(&self, event: &Event) {
        if WebhookEventType::of(event).is_some() {
            self.events.send(event.clone()).ok();
        }
    }
}

async fn dispatch(deliverer: Arc<Deliverer>, mut received: mpsc::UnboundedReceiver<Event>) {
    while let Some(event) = received.recv().await {
        let jobs = match deliverer.jobs(std::slice::from_ref(&event)).await {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::error!(%error, "the webhook policies could not be read: an event was not delivered");
                continue;
            }
        };
        for mut job in jobs {
            let deliverer = deliverer.clone();
            tokio::spawn(async move {
                loop {
                    match deliverer.attempt(&job).await {
                        Ok(Some(pause)) => {
                            tokio::time::sleep(pause).await;
                            job.attempt += 1;
                        }
                        Ok(None) => break,
                        Err(error) => {
                            tracing::error!(%error, project = job.project, policy = job.policy_id, "a webhook policy could not be read: a delivery stopped");
                            break;
                        }
                    }
                }
            });
        }
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
        EventKind::QuotaExceeded {
            repository, digest, ..
        } => {
            resource["digest"] = json!(digest.as_str());
            Some(repository)
        }
        _ => None,
    };
    let mut data = json!({ "resources": [resource] });
    if let EventKind::ReplicationRun {
        policy: name,
        execution,
        status,
        ..
    } = &event.kind
    {
        data = json!({
            "replication": {
                "policy_name": name,
                "execution_id": execution,
                "job_status": status,
                "execution_timestamp": event.at_ms / 1000,
            }
        });
    }
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
    if let EventKind::QuotaExceeded {
        used,
        adding,
        limit,
        ..
    } = &event.kind
    {
        data["custom_attributes"] = json!({
            "Details": format!(
                "adding {adding} bytes to the current usage of {used} bytes would exceed the \
                 project's limit of {limit} bytes"
            ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pause_is_four_times_the_one_before_until_the_last_attempt() {
        let retries = Retries::default();
        let pauses: Vec<_> = (1..=5)
            .map(|attempt| retries.pause_after(attempt))
            .collect();
        assert_eq!(
            pauses,
            [
                Some(Duration::from_secs(1)),
                Some(Duration::from_secs(4)),
                Some(Duration::from_secs(16)),
                None,
                None
            ]
        );
        let once = Retries {
            attempts: 0,
            ..retries
        };
        assert_eq!(
            once.pause_after(1),
            None,
            "one attempt at least, and no more"
        );
    }
}
