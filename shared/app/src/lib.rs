//! Berth's application layer: the use cases of the management API (users, projects, members,
//! robot accounts, sign-in), each taking the caller and its request context, the one place
//! their permissions are checked, and the event log every event becomes a line of.
//!
//! The registry's own use cases are [`berth_core::Registry`]'s; they take the same
//! [`RequestContext`](berth_core::RequestContext) and publish to the same
//! [`EventSink`](berth_core::EventSink).

pub mod accounts;
pub mod event_log;
pub mod permission;

pub use accounts::{AccountSettings, Accounts, ProjectCreation, RobotChange, RobotSpec, SignIn};
pub use event_log::EventLog;
pub use permission::{Caller, Permission};
