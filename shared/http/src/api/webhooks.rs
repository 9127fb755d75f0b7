//! Webhook policies and deliveries in Harbor's JSON. A target's `auth_header` is taken but
//! never answered: it is a secret.

use axum::body::Body;
use berth_app::WebhookSpec;
use berth_core::Result;
use berth_core::webhooks::{
    Delivery, DeliveryStatus, PayloadFormat, WebhookEventType, WebhookPolicy, WebhookTarget,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{bad_request, read_json, time};

#[derive(Deserialize)]
struct NewPolicy {
    name: String,
    #[serde(default)]
    description: String,
    targets: Vec<NewTarget>,
    event_types: Vec<String>,
    #[serde(default = "enabled")]
    enabled: bool,
}

fn enabled() -> bool {
    true
}

#[derive(Deserialize)]
struct NewTarget {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    address: String,
    #[serde(default)]
    auth_header: Option<String>,
    #[serde(default)]
    skip_cert_verify: bool,
    #[serde(default)]
    payload_format: Option<String>,
}

pub(super) fn id(text: &str) -> Result<u64> {
    text.parse()
        .map_err(|_| bad_request(format!("a webhook policy id is a number, not {text:?}")))
}

pub(super) async fn read_spec(body: Body) -> Result<WebhookSpec> {
    let new: NewPolicy = read_json(body).await?;
    let mut targets = Vec::new();
    for target in new.targets {
        if target.kind.as_deref().is_some_and(|kind| kind != "http") {
            return Err(bad_request(format!(
                "webhook targets of type {:?} are not supported: use \"http\"",
                target.kind.unwrap_or_default()
            )));
        }
        let payload_format = match target.payload_format.as_deref() {
            None | Some("" | "Default") => PayloadFormat::Default,
            Some("CloudEvents") => PayloadFormat::CloudEvents,
            Some(other) => {
                return Err(bad_request(format!(
                    "payload_format is \"Default\" or \"CloudEvents\", not {other:?}"
                )));
            }
        };
        targets.push(WebhookTarget {
            address: target.address,
            auth_header: target.auth_header.filter(|header| !header.is_empty()),
            skip_cert_verify: target.skip_cert_verify,
            payload_format,
        });
    }
    let mut event_types = Vec::new();
    for name in &new.event_types {
        let kind = WebhookEventType::parse(name).ok_or_else(|| {
            bad_request(format!(
                "event type {name:?} is not one of {}",
                WebhookEventType::ALL
                    .map(WebhookEventType::as_str)
                    .join(", ")
            ))
        })?;
        if !event_types.contains(&kind) {
            event_types.push(kind);
        }
    }
    Ok(WebhookSpec {
        name: new.name,
        description: new.description,
        targets,
        event_types,
        enabled: new.enabled,
    })
}

pub(super) fn policy_json(policy: &WebhookPolicy) -> Value {
    let targets: Vec<Value> = policy
        .targets
        .iter()
        .map(|target| {
            json!({
                "type": "http",
                "address": target.address,
                "skip_cert_verify": target.skip_cert_verify,
                "payload_format": match target.payload_format {
                    PayloadFormat::Default => "Default",
                    PayloadFormat::CloudEvents => "CloudEvents",
                },
            })
        })
        .collect();
    json!({
        "id": policy.id,
        "name": policy.name,
        "description": policy.description,
        "project_name": policy.project,
        "targets": targets,
        "event_types": policy.event_types.iter().map(|kind| kind.as_str()).collect::<Vec<_>>(),
        "enabled": policy.enabled,
        "creation_time": berth_auth::rfc3339(policy.created_at),
        "update_time": berth_auth::rfc3339(policy.updated_at),
    })
}

pub(super) fn delivery_json(delivery: &Delivery) -> Value {
    let finished = delivery.status != DeliveryStatus::Running;
    json!({
        "id": delivery.id,
        "policy_id": delivery.policy_id,
        "vendor_type": "WEBHOOK",
        "trigger": "EVENT",
        "status": delivery.status.as_str(),
        "start_time": time(delivery.created_ms),
        "end_time": if finished { time(delivery.updated_ms) } else { None },
        "extra_attrs": {
            "event_type": delivery.event_type.as_str(),
            "address": delivery.address,
            "http_code": delivery.http_code,
            "attempts": delivery.attempts,
            "error": delivery.error,
        },
    })
}
