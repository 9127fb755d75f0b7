//! Replication in `berth serve`: the registry publishes its pushes and deletions to an
//! in-process queue, a few workers run the jobs, and a scheduler starts scheduled policies.
//! Remote credentials are sealed with a key from `BERTH_SECRET_KEY` (base64, 32 bytes) or,
//! without one, a key made on first start in `<data-dir>/replication.key` (mode 0600).

use std::path::Path;
use std::sync::Arc;

use berth_core::{EventBus, Registry, Result};
use berth_http::ManagementApi;
use berth_http::replication::ReplicationApi;
use berth_replication::engine::Replicator;
use berth_replication::local::{LocalDeadLetters, LocalQueue, run_scheduler, run_workers};
use berth_replication::secrets::{LocalSecretBox, SecretBox};

use crate::Stores;

/// The file the local secret key is kept in, under the data directory.
pub const SECRET_KEY_FILE: &str = "replication.key";
/// How many replication jobs run at once.
pub const WORKERS: usize = 4;

/// The local secret box: `BERTH_SECRET_KEY` when set, else the data directory's key file.
pub fn local_secrets(data_dir: &Path, key: Option<&str>) -> Result<Arc<dyn SecretBox>> {
    Ok(Arc::new(match key {
        Some(key) => LocalSecretBox::from_base64(key)?,
        None => LocalSecretBox::from_file(&data_dir.join(SECRET_KEY_FILE))?,
    }))
}

/// Replication as one process runs it.
#[derive(Debug, Clone)]
pub struct LocalReplication {
    /// The registry, publishing its events to [`LocalReplication::events`].
    pub registry: Arc<Registry>,
    pub replicator: Arc<Replicator>,
    pub dead_letters: Arc<LocalDeadLetters>,
    /// The process's event subscribers and replication's queue.
    pub events: Arc<EventBus>,
}

impl LocalReplication {
    /// The replication API, its callers signing in with `management` (`None`: no auth).
    pub fn api(&self, management: Option<Arc<ManagementApi>>) -> ReplicationApi {
        ReplicationApi::new(self.replicator.clone(), management)
            .with_dead_letters(self.dead_letters.clone())
    }
}

/// The registry and the replicator, with its workers and scheduler running on the current
/// runtime; the registry publishes to `events` and to replication's queue. `configure`
/// adjusts the replicator before it starts (tests shorten retries).
pub fn start_local(
    stores: &Stores,
    secrets: Arc<dyn SecretBox>,
    events: EventBus,
    configure: impl FnOnce(Replicator) -> Replicator,
) -> LocalReplication {
    let (queue, jobs) = LocalQueue::new();
    let events = Arc::new(events.subscribe(Arc::new(queue.clone())));
    let registry = Arc::new(stores.registry_with(|registry| registry.with_events(events.clone())));
    let replicator = Arc::new(configure(
        Replicator::new(
            stores.replication.clone(),
            registry.clone(),
            secrets,
            Arc::new(queue.clone()),
        )
        .with_accounts(stores.accounts.clone())
        .with_events(events.clone()),
    ));
    let dead_letters = Arc::new(LocalDeadLetters::default());
    tokio::spawn(run_workers(
        replicator.clone(),
        queue,
        jobs,
        dead_letters.clone(),
        WORKERS,
    ));
    tokio::spawn(run_scheduler(replicator.clone()));
    LocalReplication {
        registry,
        replicator,
        dead_letters,
        events,
    }
}
