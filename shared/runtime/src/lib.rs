//! Berth's composition root: it turns configuration into ready stores, a [`Registry`] and the
//! router, once per process, for the local server and (later) every Lambda function.

mod storage;

use std::sync::Arc;

use berth_core::Registry;

pub use crate::storage::{BlobLocation, MetadataLocation, S3Options, StorageConfig};

/// The router for one process serving every endpoint on one listener.
pub fn local_router(registry: Arc<Registry>) -> berth_http::Router {
    berth_http::router(registry, berth_http::Settings::default())
}
