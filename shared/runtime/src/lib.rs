//! Berth's composition root: it turns configuration into a ready [`Registry`] and router, once
//! per process, for the local server and (later) every Lambda function.

use std::path::PathBuf;
use std::sync::Arc;

use berth_core::{Registry, RegistryError};

/// Storage for local mode: blobs on the filesystem, metadata in an embedded database, both
/// under one data directory.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    pub data_dir: PathBuf,
}

impl LocalStorage {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
        }
    }

    /// Opens (creating if needed) the data directory and the stores in it.
    pub fn open(&self) -> Result<Arc<Registry>, RegistryError> {
        std::fs::create_dir_all(&self.data_dir).map_err(|e| {
            RegistryError::internal(format!(
                "cannot create data directory {}: {e}",
                self.data_dir.display()
            ))
        })?;
        let (blobs, meta) = berth_store_local::open_data_dir(&self.data_dir)?;
        tracing::info!(data_dir = %self.data_dir.display(), "local storage opened");
        Ok(Arc::new(Registry::new(Arc::new(blobs), Arc::new(meta))))
    }
}

/// The router for local mode: every endpoint on one listener.
pub fn local_router(registry: Arc<Registry>) -> berth_http::Router {
    berth_http::router(registry, berth_http::Settings::default())
}
