//! Berth's registry core: identifiers, digests, manifests, byte ranges, the storage ports and
//! the use cases every entry point shares. Nothing here knows about HTTP frameworks or AWS.

pub mod accounts;
pub mod audit;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod digest;
pub mod error;
pub mod events;
pub mod gc;
pub mod glob;
pub mod immutable;
pub mod manifest;
pub mod names;
pub mod ports;
pub mod quota;
pub mod range;
pub mod registry;
pub mod replication;
pub mod retention;
pub mod schedule;
pub mod statistics;
pub mod webhooks;

pub use accounts::AccountStore;
pub use audit::AuditStore;
pub use digest::{Algorithm, Digest};
pub use error::{ErrorCode, ErrorHint, RegistryError, Result};
pub use events::{Actor, EntryPoint, Event, EventBus, EventKind, EventSink, RequestContext};
pub use names::{Reference, RepositoryName, Tag, UploadId};
pub use registry::Registry;
pub use replication::ReplicationStore;
pub use statistics::StatisticsStore;
pub use webhooks::WebhookStore;
