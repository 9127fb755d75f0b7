//! Berth's composition root: it turns configuration into ready stores, a [`Registry`](berth_core::Registry) and the
//! router, once per process, for the local server and every Lambda function.
//!
//! Engines are cargo features, so that a Lambda binary never links the embedded store:
//! `local` (filesystem + redb), `aws` (S3 + DynamoDB), and `lambda`, the functions' own
//! composition root; `replication` adds replication, and `aws-replication` its AWS carriers
//! (SQS, KMS) and the events function's handler.

pub mod auth;
#[cfg(feature = "aws")]
mod aws;
#[cfg(feature = "aws-replication")]
pub mod events;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod logging;
#[cfg(feature = "replication")]
pub mod replication;
#[cfg(feature = "aws-replication")]
pub mod replication_aws;
pub mod routes;
mod storage;
#[cfg(feature = "aws")]
pub mod token_keys;

pub use berth_app::{EventLog, EventRecorder, Records, Retries, WebhookSender};
pub use berth_core::{AccountStore, EventBus};
pub use berth_http::{AccountSettings, ProjectCreation, Role, Settings, remember_peer};

pub use crate::routes::Routes;
pub use crate::storage::{BlobLocation, MetadataLocation, S3Options, StorageConfig, Stores};
