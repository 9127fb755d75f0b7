//! Every event as one structured log line (target `berth::event`): JSON wherever Berth logs
//! JSON, so any log collector receives what happened, who did it and in which request.

use berth_core::{Event, EventKind, EventSink};

/// The log target of event lines.
pub const EVENT_TARGET: &str = "berth::event";

/// Writes each event it receives as a log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct EventLog;

/// An event's name and its subject, in the words the log line uses.
pub fn describe(kind: &EventKind) -> (&'static str, String) {
    match kind {
        EventKind::ManifestPushed {
            repository,
            digest,
            tag,
            ..
        } => (
            "manifest_pushed",
            match tag {
                Some(tag) => format!("{repository}:{tag}@{digest}"),
                None => format!("{repository}@{digest}"),
            },
        ),
        EventKind::ManifestPulled {
            repository, digest, ..
        } => ("manifest_pulled", format!("{repository}@{digest}")),
        EventKind::ManifestDeleted { repository, digest } => {
            ("manifest_deleted", format!("{repository}@{digest}"))
        }
        EventKind::TagDeleted { repository, tag } => ("tag_deleted", format!("{repository}:{tag}")),
        EventKind::BlobPushed {
            repository, digest, ..
        } => ("blob_pushed", format!("{repository}@{digest}")),
        EventKind::BlobPulled { repository, digest } => {
            ("blob_pulled", format!("{repository}@{digest}"))
        }
        EventKind::BlobMounted {
            repository,
            digest,
            from,
        } => ("blob_mounted", format!("{repository}@{digest} from {from}")),
        EventKind::BlobDeleted { repository, digest } => {
            ("blob_deleted", format!("{repository}@{digest}"))
        }
        EventKind::LoginSucceeded { username } => ("login_succeeded", username.clone()),
        EventKind::LoginFailed { username } => ("login_failed", username.clone()),
        EventKind::AccountChanged {
            resource,
            operation,
            name,
        } => (
            match operation {
                berth_core::events::Operation::Create => "account_created",
                berth_core::events::Operation::Update => "account_updated",
                berth_core::events::Operation::Delete => "account_deleted",
            },
            format!("{} {name}", resource.as_str()),
        ),
        EventKind::ReplicationRun {
            policy,
            execution,
            status,
        } => (
            "replication_run",
            format!("policy {policy} execution {execution}: {status}"),
        ),
        EventKind::MaintenanceRun { job, status } => {
            ("maintenance_run", format!("{job}: {status}"))
        }
    }
}

impl EventSink for EventLog {
    fn publish(&self, event: &Event) {
        let (kind, subject) = describe(&event.kind);
        tracing::info!(
            target: EVENT_TARGET,
            event = kind,
            subject,
            actor = event.actor.name(),
            request_id = event.request_id,
            client = event.client,
            entry = event.entry.as_str(),
            at_ms = event.at_ms,
            "{kind}"
        );
    }
}
