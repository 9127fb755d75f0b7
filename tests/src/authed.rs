//! A Berth with token auth in this process, set up as `berth serve` sets it up: token keys in
//! its data directory, the first accounts (`admin` with [`ADMIN_PASSWORD`], the public
//! project `library`), served on a loopback port.

use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};

use berth_auth::KeyRing;
use berth_core::{Event, EventSink};
use berth_runtime::StorageConfig;
use berth_runtime::Stores;
use berth_runtime::auth::{Auth, AuthConfig, PasswordHasher, bootstrap, local_keys};
use tempfile::TempDir;
use tokio::task::JoinHandle;

/// The first administrator's password in these registries.
pub const ADMIN_PASSWORD: &str = "Admin-password-1";

/// Embedded stores and token auth over a new temporary data directory.
#[derive(Debug)]
pub struct AuthedParts {
    pub stores: Stores,
    pub auth: Auth,
    pub ring: KeyRing,
    pub data_dir: TempDir,
}

/// Opens embedded storage in a new directory and sets up auth with the first accounts.
pub async fn authed_parts() -> AuthedParts {
    let data_dir = tempfile::tempdir().expect("a data directory");
    let storage = StorageConfig::local(data_dir.path());
    let stores = storage.open_stores().await.expect("storage opens");
    let (auth, ring) = auth_over(&stores, data_dir.path()).await;
    AuthedParts {
        stores,
        auth,
        ring,
        data_dir,
    }
}

/// Token auth over the accounts of `stores`, its keys in `keys_dir`, with the first accounts.
pub async fn auth_over(stores: &Stores, keys_dir: &std::path::Path) -> (Auth, KeyRing) {
    let ring = local_keys(keys_dir).expect("token keys");
    let auth =
        Auth::new(AuthConfig::default(), &ring, stores.accounts.clone()).expect("auth is set up");
    bootstrap(
        &*stores.accounts,
        &PasswordHasher::new(),
        Some(ADMIN_PASSWORD),
    )
    .await
    .expect("the first accounts");
    (auth, ring)
}

/// Serves `router` (with the peer address remembered, as `berth serve` does) on a loopback
/// port: its address and the server task.
pub async fn serve_on_loopback(router: axum::Router) -> (SocketAddr, JoinHandle<()>) {
    let router = router.layer(axum::middleware::from_fn(berth_runtime::remember_peer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("an address");
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .expect("the server runs");
    });
    (addr, server)
}

/// Every event a registry under test publishes, in order.
#[derive(Debug, Default)]
pub struct Recorder(Mutex<Vec<Event>>);

impl Recorder {
    /// The events published so far, which are forgotten.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl EventSink for Recorder {
    fn publish(&self, event: &Event) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event.clone());
    }
}
