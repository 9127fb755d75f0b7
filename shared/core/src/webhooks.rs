//! Webhooks: a project's policies (which events go to which targets) and the record of each
//! delivery, with the [`WebhookStore`] port that keeps both.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::events::{Event, EventKind};

/// The event types a policy can follow, in Harbor's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WebhookEventType {
    PushArtifact,
    PullArtifact,
    DeleteArtifact,
    Replication,
    QuotaExceed,
    QuotaWarning,
}

impl WebhookEventType {
    pub const ALL: [Self; 6] = [
        Self::PushArtifact,
        Self::PullArtifact,
        Self::DeleteArtifact,
        Self::Replication,
        Self::QuotaExceed,
        Self::QuotaWarning,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PushArtifact => "PUSH_ARTIFACT",
            Self::PullArtifact => "PULL_ARTIFACT",
            Self::DeleteArtifact => "DELETE_ARTIFACT",
            Self::Replication => "REPLICATION",
            Self::QuotaExceed => "QUOTA_EXCEED",
            Self::QuotaWarning => "QUOTA_WARNING",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// The type of a registry event, if policies can follow it.
    pub fn of(event: &Event) -> Option<Self> {
        match event.kind {
            EventKind::ManifestPushed { .. } => Some(Self::PushArtifact),
            EventKind::ManifestPulled { .. } => Some(Self::PullArtifact),
            EventKind::ManifestDeleted { .. } | EventKind::TagDeleted { .. } => {
                Some(Self::DeleteArtifact)
            }
            EventKind::ReplicationRun { .. } => Some(Self::Replication),
            EventKind::QuotaExceeded { .. } => Some(Self::QuotaExceed),
            _ => None,
        }
    }
}

/// How a delivery's body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PayloadFormat {
    /// Harbor's own JSON.
    #[default]
    Default,
    /// A CloudEvents 1.0 structured-mode JSON event.
    CloudEvents,
}

/// Where a policy sends its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookTarget {
    /// An `http://` or `https://` URL.
    pub address: String,
    /// Sent as the `Authorization` header when set.
    pub auth_header: Option<String>,
    /// Accept any certificate from an `https://` target.
    pub skip_cert_verify: bool,
    pub payload_format: PayloadFormat,
}

/// A project's webhook policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookPolicy {
    /// Given by the store when created (0 before).
    pub id: u64,
    pub project: String,
    pub name: String,
    pub description: String,
    pub targets: Vec<WebhookTarget>,
    pub event_types: Vec<WebhookEventType>,
    pub enabled: bool,
    /// Unix seconds.
    pub created_at: u64,
    pub updated_at: u64,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryStatus {
    /// Not yet answered with a 2xx; attempts remain.
    Running,
    Success,
    /// Every attempt failed.
    Error,
}

impl DeliveryStatus {
    /// Harbor's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "Running",
            Self::Success => "Success",
            Self::Error => "Error",
        }
    }
}

/// One event sent to one target, with its attempts so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Derived from the event and the target, so that the same event delivered again updates
    /// its record instead of adding one.
    pub id: u64,
    pub project: String,
    pub policy_id: u64,
    pub event_type: WebhookEventType,
    pub address: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    /// The last answer's HTTP status, if there was an answer.
    pub http_code: Option<u16>,
    /// Why the last attempt failed, if it did.
    pub error: Option<String>,
    /// Unix milliseconds: the event's time, and the last attempt's.
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// Keeps webhook policies and the record of their deliveries.
#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// Stores a new policy under a fresh id (unique in its project), which it returns;
    /// `None` when the project already has a policy of that name.
    async fn create_webhook(&self, policy: &WebhookPolicy) -> Result<Option<u64>>;

    /// Replaces a policy; `false` when there is no such policy in its project.
    async fn update_webhook(&self, policy: &WebhookPolicy) -> Result<bool>;

    /// Deletes a policy and the record of its deliveries; `false` when there was none.
    async fn delete_webhook(&self, project: &str, id: u64) -> Result<bool>;

    async fn webhook(&self, project: &str, id: u64) -> Result<Option<WebhookPolicy>>;

    /// A project's policies, by id.
    async fn webhooks(&self, project: &str) -> Result<Vec<WebhookPolicy>>;

    /// Records a delivery, replacing the record of the same id.
    async fn record_delivery(&self, delivery: &Delivery) -> Result<()>;

    /// A policy's deliveries, newest first (by the time of their event), at most `limit`.
    async fn deliveries(
        &self,
        project: &str,
        policy_id: u64,
        limit: usize,
    ) -> Result<Vec<Delivery>>;
}
