//! Berth's application layer: the use cases of the management API (users, projects, members,
//! robot accounts, sign-in, audit queries), each taking the caller and its request context,
//! the one place their permissions are checked, and the subscribers every event reaches: the
//! event log (a line each) and the audit log.
//!
//! The registry's own use cases are [`berth_core::Registry`]'s; they take the same
//! [`RequestContext`](berth_core::RequestContext) and publish to the same
//! [`EventSink`](berth_core::EventSink).

pub mod accounts;
pub mod audit;
pub mod event_log;
pub mod permission;

pub use accounts::{AccountSettings, Accounts, ProjectCreation, RobotChange, RobotSpec, SignIn};
pub use audit::AuditLog;
pub use event_log::EventLog;
pub use permission::{Caller, Permission};
