//! Every event as one structured log line (target `berth::event`): JSON wherever Berth logs
//! JSON, so any log collector receives what happened, who did it and in which request. The
//! line's `record` field is the whole event, which [`read_line`] reads back: in AWS the
//! events function receives the functions' lines through a CloudWatch Logs subscription.

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
            ..
        } => (
            "replication_run",
            format!("policy {policy} execution {execution}: {status}"),
        ),
        EventKind::MaintenanceRun { job, status } => {
            ("maintenance_run", format!("{job}: {status}"))
        }
        EventKind::QuotaExceeded {
            repository,
            digest,
            used,
            adding,
            limit,
        } => (
            "quota_exceeded",
            format!("{repository}@{digest}: {used} + {adding} bytes > {limit}"),
        ),
    }
}

/// The field of an event line that holds the whole event as JSON.
pub const RECORD_FIELD: &str = "record";

/// The event a JSON log line of [`EventLog`] holds; `None` for any other line.
pub fn read_line(line: &str) -> Option<Event> {
    let value: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    if value.get("target")?.as_str()? != EVENT_TARGET {
        return None;
    }
    serde_json::from_str(value.get(RECORD_FIELD)?.as_str()?).ok()
}

impl EventSink for EventLog {
    fn publish(&self, event: &Event) {
        // The line's fields cost a JSON encoding: none of it when the line is filtered out.
        if !tracing::enabled!(target: EVENT_TARGET, tracing::Level::INFO) {
            return;
        }
        let (kind, subject) = describe(&event.kind);
        let record = serde_json::to_string(event).unwrap_or_default();
        tracing::info!(
            target: EVENT_TARGET,
            event = kind,
            subject,
            record,
            actor = event.actor.name(),
            request_id = event.request_id,
            client = event.client,
            entry = event.entry.as_str(),
            at_ms = event.at_ms,
            "{kind}"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use berth_core::{Actor, EntryPoint, EventKind, RequestContext};
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .expect("not poisoned")
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    #[test]
    fn an_event_line_reads_back_as_the_event() {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(lines.clone())
            .finish();
        let context =
            RequestContext::new(Actor::named("alice"), "r9", "10.1.2.3", EntryPoint::Token);
        let event = Event::now(
            &context,
            EventKind::LoginFailed {
                username: "alice".into(),
            },
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "berth::access", "not an event");
            EventLog.publish(&event);
        });
        let written =
            String::from_utf8(lines.0.lock().expect("not poisoned").clone()).expect("UTF-8");
        let read: Vec<Event> = written.lines().filter_map(read_line).collect();
        assert_eq!(read, vec![event]);
        assert_eq!(read_line("plain text"), None);
    }
}
