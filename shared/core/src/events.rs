//! What happened, and on whose behalf: the request context every use case takes, and the one
//! event type the use cases publish for audit, statistics, webhooks and replication to follow.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::names::{Reference, RepositoryName, Tag};

/// The robot accounts' name prefix; an actor named so is a robot.
const ROBOT_PREFIX: &str = "robot$";

/// Who acts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum Actor {
    Anonymous,
    User(String),
    Robot(String),
    /// Berth itself: a replication run, a maintenance job.
    System(String),
}

impl Actor {
    /// The actor an account name denotes (empty: anonymous).
    pub fn named(name: &str) -> Self {
        if name.is_empty() {
            Self::Anonymous
        } else if name.starts_with(ROBOT_PREFIX) {
            Self::Robot(name.to_owned())
        } else {
            Self::User(name.to_owned())
        }
    }

    /// The name audit records show: the account's, `anonymous`, or the system job's.
    pub fn name(&self) -> &str {
        match self {
            Self::Anonymous => "anonymous",
            Self::User(name) | Self::Robot(name) => name,
            Self::System(job) => job,
        }
    }
}

/// Through which door a request came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryPoint {
    /// The OCI distribution API, `/v2/`.
    Registry,
    /// The upload front, with an upload grant.
    UploadFront,
    /// The token endpoint.
    Token,
    /// The management API, `/api/v2.0`.
    Management,
    /// Berth's own jobs (replication, maintenance).
    System,
}

impl EntryPoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registry => "registry",
            Self::UploadFront => "upload-front",
            Self::Token => "token",
            Self::Management => "management",
            Self::System => "system",
        }
    }
}

/// The circumstances of one operation: who asks, which request it is, from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    pub actor: Actor,
    /// The request's id, as the access log and the `X-Request-Id` header show it; recording
    /// an event again under the same id and kind is recording it once.
    pub request_id: String,
    /// The client's address, as far as it is known.
    pub client: String,
    pub entry: EntryPoint,
}

impl RequestContext {
    pub fn new(
        actor: Actor,
        request_id: impl Into<String>,
        client: impl Into<String>,
        entry: EntryPoint,
    ) -> Self {
        Self {
            actor,
            request_id: request_id.into(),
            client: client.into(),
            entry,
        }
    }

    /// Berth's own job `job` (such as `replication`), run as request `run_id`.
    pub fn system(job: &str, run_id: impl Into<String>) -> Self {
        Self::new(
            Actor::System(job.to_owned()),
            run_id,
            "",
            EntryPoint::System,
        )
    }
}

/// What a management operation did to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }
}

/// The kinds of account resource the management API changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountResource {
    User,
    Project,
    Member,
    Robot,
    /// A project's webhook policy, named `project/policy`.
    Webhook,
    /// A project's tag immutability rule, named `project/id`.
    ImmutableRule,
}

impl AccountResource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Project => "project",
            Self::Member => "project_member",
            Self::Robot => "robot",
            Self::Webhook => "webhook_policy",
            Self::ImmutableRule => "immutable_tag_rule",
        }
    }
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum EventKind {
    /// A manifest was stored, under `tag` (which moved to it) when pushed by tag.
    ManifestPushed {
        repository: RepositoryName,
        digest: Digest,
        tag: Option<Tag>,
        media_type: String,
        size: u64,
    },
    /// A manifest was read (`GET`, not `HEAD`).
    ManifestPulled {
        repository: RepositoryName,
        reference: Reference,
        digest: Digest,
    },
    /// A manifest, with every tag pointing at it, was deleted.
    ManifestDeleted {
        repository: RepositoryName,
        digest: Digest,
    },
    /// One tag was deleted; its manifest stays.
    TagDeleted {
        repository: RepositoryName,
        tag: Tag,
    },
    /// A blob upload completed.
    BlobPushed {
        repository: RepositoryName,
        digest: Digest,
        size: u64,
    },
    /// A blob was served or redirected to (`GET`).
    BlobPulled {
        repository: RepositoryName,
        digest: Digest,
    },
    /// A blob was linked from another repository.
    BlobMounted {
        repository: RepositoryName,
        digest: Digest,
        from: RepositoryName,
    },
    /// A repository's link to a blob was removed.
    BlobDeleted {
        repository: RepositoryName,
        digest: Digest,
    },
    /// Credentials were accepted for `username`.
    LoginSucceeded { username: String },
    /// Credentials for `username` were refused (the password is never part of an event).
    LoginFailed { username: String },
    /// A user, project, membership or robot account was created, changed or deleted.
    /// `name` is the resource's own name (`project/user` for a membership).
    AccountChanged {
        resource: AccountResource,
        operation: Operation,
        name: String,
    },
    /// A replication execution ended. `projects` are this registry's projects it copied
    /// from (a push policy) or into (a pull policy), whose webhooks hear of it.
    ReplicationRun {
        policy: String,
        execution: u64,
        status: String,
        #[serde(default)]
        projects: Vec<String>,
    },
    /// A maintenance job ran.
    MaintenanceRun { job: String, status: String },
    /// A push of `digest` (a blob or a manifest) was refused: it would have taken the
    /// repository's project past its storage limit.
    QuotaExceeded {
        repository: RepositoryName,
        digest: Digest,
        used: u64,
        adding: u64,
        limit: u64,
    },
}

/// One event: what happened, who did it, when, in which request. Its JSON form is what the
/// event log writes and the events function reads back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unix time in milliseconds.
    pub at_ms: u64,
    pub actor: Actor,
    pub request_id: String,
    pub client: String,
    pub entry: EntryPoint,
    pub kind: EventKind,
}

impl Event {
    /// `kind`, done now in `context`.
    pub fn now(context: &RequestContext, kind: EventKind) -> Self {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| {
                u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
            });
        Self {
            at_ms,
            actor: context.actor.clone(),
            request_id: context.request_id.clone(),
            client: context.client.clone(),
            entry: context.entry,
            kind,
        }
    }

    /// The projects the event belongs to: its repository's, or a replication run's.
    pub fn projects(&self) -> Vec<String> {
        match (&self.kind, self.repository()) {
            (_, Some(repository)) => vec![crate::audit::project_of(repository.as_str())],
            (EventKind::ReplicationRun { projects, .. }, None) => projects.clone(),
            _ => Vec::new(),
        }
    }

    /// The repository the event is about, if it is about one.
    pub fn repository(&self) -> Option<&RepositoryName> {
        match &self.kind {
            EventKind::ManifestPushed { repository, .. }
            | EventKind::ManifestPulled { repository, .. }
            | EventKind::ManifestDeleted { repository, .. }
            | EventKind::TagDeleted { repository, .. }
            | EventKind::BlobPushed { repository, .. }
            | EventKind::BlobPulled { repository, .. }
            | EventKind::BlobMounted { repository, .. }
            | EventKind::BlobDeleted { repository, .. }
            | EventKind::QuotaExceeded { repository, .. } => Some(repository),
            _ => None,
        }
    }
}

/// Receives events once what they describe is durable. Publishing must not block: a slow
/// follower queues, it never holds up a push or a pull.
pub trait EventSink: Send + Sync + 'static {
    fn publish(&self, event: &Event);
}

/// Publishes each event to every subscriber, in order.
#[derive(Default, Clone)]
pub struct EventBus {
    subscribers: Vec<Arc<dyn EventSink>>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("subscribers", &self.subscribers.len())
            .finish()
    }
}

impl EventBus {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn subscribe(mut self, subscriber: Arc<dyn EventSink>) -> Self {
        self.subscribers.push(subscriber);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.subscribers.is_empty()
    }
}

impl EventSink for EventBus {
    fn publish(&self, event: &Event) {
        for subscriber in &self.subscribers {
            subscriber.publish(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Event>>);

    impl EventSink for Recorder {
        fn publish(&self, event: &Event) {
            self.0.lock().expect("not poisoned").push(event.clone());
        }
    }

    #[test]
    fn actors_are_told_apart_by_name() {
        assert_eq!(Actor::named(""), Actor::Anonymous);
        assert_eq!(Actor::named("alice"), Actor::User("alice".into()));
        assert_eq!(
            Actor::named("robot$team+ci"),
            Actor::Robot("robot$team+ci".into())
        );
        assert_eq!(Actor::Anonymous.name(), "anonymous");
        assert_eq!(Actor::System("replication".into()).name(), "replication");
    }

    #[test]
    fn the_bus_gives_every_subscriber_each_event_once() {
        let (first, second) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
        let bus = EventBus::new()
            .subscribe(first.clone())
            .subscribe(second.clone());
        let context =
            RequestContext::new(Actor::named("alice"), "r1", "127.0.0.1", EntryPoint::Token);
        let event = Event::now(
            &context,
            EventKind::LoginSucceeded {
                username: "alice".into(),
            },
        );
        bus.publish(&event);
        for recorder in [first, second] {
            let seen = recorder.0.lock().expect("not poisoned");
            assert_eq!(*seen, vec![event.clone()]);
            assert_eq!(seen[0].actor.name(), "alice");
            assert_eq!(seen[0].request_id, "r1");
        }
    }

    #[test]
    fn an_event_belongs_to_its_repository_s_project_or_its_run_s() {
        let context = RequestContext::system("replication", "replication-execution-7");
        let tag_deleted = Event::now(
            &context,
            EventKind::TagDeleted {
                repository: "team/tools/app".parse().expect("a name"),
                tag: "v1".parse().expect("a tag"),
            },
        );
        assert_eq!(tag_deleted.projects(), ["team"]);
        let run = Event::now(
            &context,
            EventKind::ReplicationRun {
                policy: "mirror".into(),
                execution: 7,
                status: "Succeed".into(),
                projects: vec!["library".into(), "team".into()],
            },
        );
        assert_eq!(run.projects(), ["library", "team"]);
        let login = Event::now(
            &context,
            EventKind::LoginFailed {
                username: "alice".into(),
            },
        );
        assert!(login.projects().is_empty());
        // A run logged before runs named their projects reads back with none.
        let older = r#"{"type":"replication_run","policy":"p","execution":1,"status":"Failed"}"#;
        assert_eq!(
            serde_json::from_str::<EventKind>(older).expect("read"),
            EventKind::ReplicationRun {
                policy: "p".into(),
                execution: 1,
                status: "Failed".into(),
                projects: Vec::new(),
            }
        );
    }

    #[test]
    fn an_event_reads_back_from_its_json() {
        let context = RequestContext::new(
            Actor::named("robot$team+ci"),
            "r2",
            "10.0.0.1",
            EntryPoint::Registry,
        );
        let event = Event::now(
            &context,
            EventKind::ManifestPulled {
                repository: "team/app".parse().expect("a name"),
                reference: "v1".parse().expect("a tag"),
                digest: "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                    .parse()
                    .expect("a digest"),
            },
        );
        let json = serde_json::to_string(&event).expect("JSON");
        assert!(json.contains(r#""type":"manifest_pulled""#), "{json}");
        assert_eq!(
            serde_json::from_str::<Event>(&json).expect("read back"),
            event
        );
    }
}
