//! Replication between Berth and other registries: remote endpoints, policies with Harbor's
//! filters, the copy engine speaking the OCI distribution protocol, executions and tasks,
//! event and schedule triggers.

pub mod copy;
pub mod ends;
pub mod engine;
pub mod local;
pub mod remote;
pub mod rules;
pub use berth_core::schedule;
pub mod secrets;
