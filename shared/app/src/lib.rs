//! Berth's application layer: the use cases of the management API (users, projects, members,
//! robot accounts, sign-in, audit queries), each taking the caller and its request context,
//! the one place their permissions are checked, and the subscribers every event reaches: the
//! event log (a line each) and the recorder (audit entries and pull counts).
//!
//! The registry's own use cases are [`berth_core::Registry`]'s; they take the same
//! [`RequestContext`](berth_core::RequestContext) and publish to the same
//! [`EventSink`](berth_core::EventSink).

pub mod accounts;
pub mod artifacts;
pub mod event_log;
pub mod gc;
pub mod immutable;
pub mod permission;
pub mod quotas;
pub mod recorder;
pub mod retention;
pub mod webhooks;

pub use accounts::{
    AccountSettings, Accounts, ProjectCreation, RobotChange, RobotSpec, SignIn, Summary,
};
pub use artifacts::{
    ArtifactQuery, ArtifactType, ArtifactView, Listing, NameMatch, PageRequest, RepositoryOrder,
    RepositoryQuery, RepositorySummary,
};
pub use event_log::EventLog;
pub use gc::{GarbageCollection, GcRunner, ScheduleRequest};
pub use permission::{Caller, Permission};
pub use quotas::ProjectSummary;
pub use recorder::{EventRecorder, Records};
pub use retention::{ImmutabilityCheck, PolicySpec, Retention, RetentionRunner};
pub use webhooks::{Deliverer, Retries, WebhookJob, WebhookQueue, WebhookSender, WebhookSpec};
