//! What each function does once per cold start: the stores, the token keys and the router it
//! serves, and how a function that cannot start or whose runtime stops says so.

use std::fmt;
use std::process::ExitCode;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use berth_core::{Registry, RegistryError};
use berth_http::{KeyRefresh, RegistryAuth, Role, Router, Settings, UploadHandoff};

use super::env::{ConfigError, FunctionConfig, UploadFrontSettings};
#[cfg(feature = "aws-replication")]
use super::env::{Lookup, ReplicationConfig, audit_retention, env_var, storage_from_vars};
use super::gateway::gateway_layers;
#[cfg(feature = "aws-replication")]
use crate::StorageConfig;
use crate::auth::{Auth, VERIFIED_TOKEN_CACHE, service_keys};
#[cfg(feature = "aws-replication")]
use crate::aws::AwsConfig;
use crate::token_keys::{PublicKeys, SsmKeys};
use crate::{EventLog, Routes};

/// Why a function could not get ready for its first event.
#[derive(Debug)]
pub enum StartError {
    Config(ConfigError),
    Storage(RegistryError),
    Keys(RegistryError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(error) => write!(f, "configuration: {error}"),
            Self::Storage(error) => {
                write!(f, "storage: {}", error.cause().unwrap_or(error.message()))
            }
            Self::Keys(error) => {
                write!(
                    f,
                    "token keys: {}",
                    error.cause().unwrap_or(error.message())
                )
            }
        }
    }
}

impl std::error::Error for StartError {}

impl FunctionConfig {
    /// How the router behaves in a function of `role`, checking tokens with `auth`.
    pub fn settings(&self, role: Role, auth: Option<Arc<RegistryAuth>>) -> Settings {
        Settings {
            chunk_min_length: self.chunk_min_length,
            chunk_max_length: Some(self.chunk_max_length),
            role: Some(role),
            max_body: Some(self.chunk_max_length),
            contain_panics: true,
            auth,
            upload_handoff: None,
            upload_front: None,
        }
    }

    /// The router a function of `role` serves over `registry`. A deployed function always
    /// passes `auth`; without it every request is let through (for tests of the routing).
    pub fn router(
        &self,
        registry: Arc<Registry>,
        role: Role,
        auth: Option<Arc<RegistryAuth>>,
    ) -> Router {
        gateway_layers(
            Routes::new()
                .registry(registry, self.settings(role, auth))
                .build(),
        )
    }

    /// The registry's token check with the verification keys of `ring`, reloading them from
    /// `source` when a token names a key that is not among them (a rotation).
    pub fn registry_auth(
        &self,
        ring: &berth_auth::KeyRing,
        source: Option<Arc<dyn berth_http::KeySource>>,
    ) -> Arc<RegistryAuth> {
        let auth = crate::auth::registry_auth(&self.auth, ring);
        Arc::new(match source {
            Some(source) => auth.with_key_source(source, &self.auth.service, VERIFIED_TOKEN_CACHE),
            None => auth,
        })
    }

    /// The router of the token function: the token endpoint and the management API over the
    /// accounts of `stores`, signing with `auth`, its events written to the log.
    pub fn token_router(&self, auth: &Auth, stores: &crate::Stores) -> Router {
        gateway_layers(token_routes(auth, stores).build())
    }
}

/// The token function's routes, before any replication API joins them: its events go to the
/// log, and it answers audit queries from the table (which the events function fills).
/// Garbage collection's and tag retention's APIs start runs here; the `gc` function carries
/// them out.
fn token_routes<'a>(auth: &'a Auth, stores: &crate::Stores) -> Routes<'a> {
    let grace = crate::lambda::gc_grace_from_env().unwrap_or_else(|error| {
        tracing::error!(%error, "garbage collection keeps its default grace window");
        berth_core::gc::DEFAULT_GRACE
    });
    Routes::new()
        .accounts(auth, stores.accounts.clone(), stores.metadata.clone())
        .events(Arc::new(EventLog))
        .audit(stores.audit.clone())
        .statistics(stores.statistics.clone())
        .quotas(stores.quotas.clone())
        .webhooks(stores.webhooks.clone())
        .gc(stores.garbage_collection(Arc::new(EventLog), grace, berth_app::gc::STEP_BUDGET))
        .retention(stores.retention(logging_registry(stores), Arc::new(EventLog)))
}

/// The `gc` function's handler, Berth's maintenance: each invocation (a minute's schedule
/// tick, or a change to a run's record on the table's stream) starts the scheduled garbage
/// collection run if due and carries the run that is going on for a bounded number of steps;
/// then does the same for tag retention (the runs whose schedule came due, and a bounded
/// number of repositories of the running ones).
pub struct GcHandler {
    gc: Arc<berth_app::GarbageCollection>,
    steps: usize,
    retention: Option<Arc<berth_app::Retention>>,
    retention_steps: usize,
}

impl std::fmt::Debug for GcHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcHandler")
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

impl GcHandler {
    /// Whatever the event, the same work: what the table says is due.
    pub async fn call(
        &self,
        _event: lambda_runtime::LambdaEvent<serde_json::Value>,
    ) -> Result<serde_json::Value, lambda_runtime::Error> {
        let gc = self.gc.tick(self.steps).await;
        if let Err(error) = &gc {
            tracing::error!(%error, "garbage collection");
        }
        let retention = match &self.retention {
            Some(retention) => retention.tick(self.retention_steps).await,
            None => Ok(false),
        };
        if let Err(error) = &retention {
            tracing::error!(%error, "tag retention");
        }
        match (gc, retention) {
            (Ok(running), Ok(retaining)) => Ok(serde_json::json!({
                "running": running,
                "retention_running": retaining,
            })),
            (Err(error), _) | (_, Err(error)) => Err(error.to_string().into()),
        }
    }
}

/// Everything the `gc` function does once per cold start: the configuration, the stores,
/// garbage collection over them.
pub async fn start_gc() -> Result<GcHandler, StartError> {
    let config = crate::lambda::GcSettings::from_env().map_err(StartError::Config)?;
    let stores = config
        .storage
        .open_stores()
        .await
        .map_err(StartError::Storage)?;
    let gc = stores
        .garbage_collection(Arc::new(EventLog), config.grace, config.step_size)
        .ok_or_else(|| {
            StartError::Storage(berth_core::RegistryError::internal(
                "this storage keeps no garbage index",
            ))
        })?;
    let retention = stores.retention(logging_registry(&stores), Arc::new(EventLog));
    Ok(GcHandler {
        gc,
        steps: config.steps,
        retention,
        retention_steps: config.retention_steps,
    })
}

/// A function's registry: every event it publishes becomes a log line, which costs a pull no
/// request (the events function reads the lines back).
fn logging_registry(stores: &crate::Stores) -> Arc<Registry> {
    Arc::new(stores.registry_with(|registry| registry.with_events(Arc::new(EventLog))))
}

impl FunctionConfig {
    /// Opens the stores, the registry publishing to the log.
    async fn open_registry(storage: &crate::StorageConfig) -> Result<Arc<Registry>, StartError> {
        let stores = storage.open_stores().await.map_err(StartError::Storage)?;
        Ok(logging_registry(&stores))
    }
}

/// Everything a registry function does once per cold start: the configuration from the
/// environment, the AWS clients, the public token keys, the router of `role`.
pub async fn start(role: Role) -> Result<Router, StartError> {
    let config = FunctionConfig::from_env().map_err(StartError::Config)?;
    let registry = FunctionConfig::open_registry(&config.storage).await?;
    let keys = SsmKeys::new(&config.token_keys)
        .await
        .map_err(StartError::Keys)?;
    let front = config.upload_front.as_ref().filter(|_| role == Role::Push);
    // Both parameters in one round trip's time: this is every cold start's wait.
    let (ring, key) = tokio::try_join!(keys.verification_ring(), async {
        match front {
            Some(_) => keys.upload_key().await.map(Some),
            None => Ok(None),
        }
    })
    .map_err(StartError::Keys)?;
    let handoff = match (front, key) {
        (Some(front), Some(key)) => {
            let handoff = UploadHandoff::new(&front.url, Arc::new(key), front.grant_lifetime)
                .map_err(|problem| {
                    StartError::Config(ConfigError::new("BERTH_UPLOAD_URL", problem))
                })?;
            Some(Arc::new(handoff))
        }
        _ => None,
    };
    let auth = config.registry_auth(&ring, Some(PublicKeys::shared(keys)));
    let mut settings = config.settings(role, Some(auth));
    settings.upload_handoff = handoff;
    Ok(gateway_layers(
        Routes::new().registry(registry, settings).build(),
    ))
}

/// Everything the upload front does before it serves: the configuration from the
/// environment, the stores, the upload grant key; the router of upload sessions (no size
/// limit, grants instead of tokens), with `GET /health` for the load balancer.
pub async fn start_upload_front() -> Result<Router, StartError> {
    let config = UploadFrontSettings::from_env().map_err(StartError::Config)?;
    let registry = FunctionConfig::open_registry(&config.storage).await?;
    let keys = SsmKeys::new(&config.token_keys)
        .await
        .map_err(StartError::Keys)?;
    let key = keys.upload_key().await.map_err(StartError::Keys)?;
    Ok(upload_front_router(registry, Arc::new(key)))
}

/// The upload front's router over `registry`, admitting requests with grants `key` signed.
pub fn upload_front_router(registry: Arc<Registry>, key: Arc<berth_auth::GrantKey>) -> Router {
    let settings = Settings {
        upload_front: Some(key),
        contain_panics: true,
        ..Settings::default()
    };
    Router::new()
        .route("/health", axum::routing::get(|| async { "ok\n" }))
        .merge(Routes::new().registry(registry, settings).build())
}

/// Everything the token function does once per cold start: the configuration, the stores,
/// the signing key, the router of the token endpoint and the management API.
pub async fn start_token() -> Result<Router, StartError> {
    let config = FunctionConfig::from_env().map_err(StartError::Config)?;
    #[cfg(feature = "aws-replication")]
    let (stores, replication) = match ReplicationConfig::from_env_if_set()
        .map_err(StartError::Config)?
    {
        Some(replication) => {
            let (stores, replication) = AwsReplication::open(&config.storage, &replication).await?;
            (stores, Some(replication))
        }
        None => {
            tracing::info!(
                "BERTH_REPLICATION_QUEUE_URL and BERTH_REPLICATION_KMS_KEY are not set: \
                     no replication API"
            );
            let stores = config
                .storage
                .open_stores()
                .await
                .map_err(StartError::Storage)?;
            (stores, None)
        }
    };
    #[cfg(not(feature = "aws-replication"))]
    let stores = config
        .storage
        .open_stores()
        .await
        .map_err(StartError::Storage)?;
    let keys = SsmKeys::new(&config.token_keys)
        .await
        .map_err(StartError::Keys)?;
    let ring = keys.signing_ring().await.map_err(StartError::Keys)?;
    let auth =
        Auth::new(config.auth.clone(), &ring, stores.accounts.clone()).map_err(StartError::Keys)?;
    let signing = Arc::new(SigningKeys {
        keys,
        auth: auth.clone(),
        refresh: KeyRefresh::default(),
    });
    #[cfg(feature = "aws-replication")]
    let router = match replication {
        Some(replication) => gateway_layers(
            token_routes(&auth, &stores)
                .replication(|management| replication.api(management))
                .build(),
        ),
        None => config.token_router(&auth, &stores),
    };
    #[cfg(not(feature = "aws-replication"))]
    let router = config.token_router(&auth, &stores);
    Ok(router.layer(axum::middleware::from_fn_with_state(
        signing,
        reload_signing_keys,
    )))
}

/// Replication over the stores of a function: the replicator (sending its jobs to SQS,
/// sealing with KMS) and, when configured, the dead-letter queue's reader.
#[cfg(feature = "aws-replication")]
#[derive(Debug, Clone)]
pub struct AwsReplication {
    pub replicator: Arc<berth_replication::engine::Replicator>,
    pub dead_letters: Option<Arc<crate::replication_aws::SqsDeadLetters>>,
}

#[cfg(feature = "aws-replication")]
impl AwsReplication {
    /// Builds the replicator over `stores` with the clients of `aws`; makes no request. The
    /// registry it copies into and out of publishes no events: in AWS the table's stream
    /// carries them.
    async fn new(
        aws: &AwsConfig,
        stores: &crate::Stores,
        config: &ReplicationConfig,
        events: Option<Arc<dyn berth_core::EventSink>>,
    ) -> Self {
        use crate::replication_aws::{KmsSecretBox, SqsDeadLetters, SqsDispatch};
        let mut replicator = berth_replication::engine::Replicator::new(
            stores.replication.clone(),
            stores.registry(),
            Arc::new(KmsSecretBox::new(aws, config.kms_key.clone()).await),
            Arc::new(SqsDispatch::new(aws, config.queue_url.clone()).await),
        );
        if let Some(events) = events {
            replicator = replicator.with_events(events);
        }
        let dead_letters = match &config.dead_letter_queue_url {
            Some(url) => Some(Arc::new(SqsDeadLetters::new(aws, url.clone()).await)),
            None => None,
        };
        Self {
            replicator: Arc::new(replicator),
            dead_letters,
        }
    }

    /// Replication over `storage`, opened with the process's AWS configuration (the
    /// standard `AWS_*` variables).
    pub async fn open(
        storage: &StorageConfig,
        config: &ReplicationConfig,
    ) -> Result<(crate::Stores, Self), StartError> {
        let aws = AwsConfig::from_env().map_err(StartError::Storage)?;
        let stores = storage
            .open_stores_with(&aws)
            .await
            .map_err(StartError::Storage)?;
        let replication = Self::new(&aws, &stores, config, None).await;
        Ok((stores, replication))
    }

    /// The replication API over this replicator, its callers checked by `management`.
    pub fn api(
        &self,
        management: Option<Arc<berth_http::ManagementApi>>,
    ) -> berth_http::replication::ReplicationApi {
        let api = berth_http::replication::ReplicationApi::new(self.replicator.clone(), management);
        match &self.dead_letters {
            Some(dead_letters) => api.with_dead_letters(dead_letters.clone()),
            None => api,
        }
    }
}

/// Everything the events function does once per cold start: the storage and replication
/// configuration, the AWS clients, the replicator.
#[cfg(feature = "aws-replication")]
pub async fn start_events() -> Result<crate::events::EventsHandler, StartError> {
    let var: Lookup<'_> = &|name| Ok(env_var(name)?.filter(|value| !value.is_empty()));
    let storage = storage_from_vars(var).map_err(StartError::Config)?;
    let config = ReplicationConfig::from_env().map_err(StartError::Config)?;
    let retention = audit_retention(var).map_err(StartError::Config)?;
    let aws = AwsConfig::from_env().map_err(StartError::Storage)?;
    let stores = storage
        .open_stores_with(&aws)
        .await
        .map_err(StartError::Storage)?;
    // The replication runs it ends are followed before it answers.
    let published = Arc::new(crate::events::Published::default());
    let replication = AwsReplication::new(&aws, &stores, &config, Some(published.clone())).await;
    let records = berth_app::Records {
        audit: stores
            .audit
            .map(|audit| (audit, std::time::Duration::from_millis(retention))),
        statistics: stores.statistics,
    };
    let mut handler = crate::events::EventsHandler::new(replication.replicator)
        .with_records(records)
        .with_published(published);
    if let Some(webhooks) = stores.webhooks {
        let deliverer = berth_app::Deliverer::new(webhooks, berth_app::Retries::default())
            .map_err(StartError::Storage)?;
        let queue = crate::replication_aws::SqsDispatch::new(&aws, config.queue_url).await;
        handler = handler.with_webhooks(deliverer, Arc::new(queue));
    }
    Ok(handler)
}

/// The token function's keys, loaded again from Parameter Store every
/// [`berth_http::KEY_MAX_AGE`]: after a rotation a warm instance signs with the new key, and
/// reads the refresh tokens other instances signed with it, within that time.
#[derive(Debug)]
struct SigningKeys {
    keys: SsmKeys,
    auth: Auth,
    refresh: KeyRefresh,
}

async fn reload_signing_keys(
    axum::extract::State(signing): axum::extract::State<Arc<SigningKeys>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    signing
        .refresh
        .run_if_due(false, || async {
            let reloaded = match signing.keys.signing_ring().await {
                Ok(ring) => service_keys(&signing.auth.config, &ring).map(|keys| (keys, ring)),
                Err(error) => Err(error),
            };
            match reloaded {
                Ok(((issuer, verifier), ring)) => {
                    signing.auth.tokens.replace_keys(issuer, verifier);
                    tracing::info!(current_kid = ring.current_kid(), "reloaded the token keys");
                }
                Err(error) => tracing::warn!(error = %error, "could not reload the token keys"),
            }
        })
        .await;
    next.run(request).await
}

/// Logs why the function cannot start, once, and gives the exit code that makes Lambda
/// report an initialisation error.
pub fn refuse_to_start(error: &StartError) -> ExitCode {
    let message = "the function cannot start; fix its environment and redeploy";
    if tracing::enabled!(tracing::Level::ERROR) {
        tracing::error!(error = %error, "{message}");
    } else {
        eprintln!("{message}: {error}");
    }
    ExitCode::FAILURE
}

/// Logs why the Lambda runtime stopped, and gives the exit code for it.
pub fn runtime_failed(error: &dyn std::error::Error) -> ExitCode {
    tracing::error!(error = %error, "the Lambda runtime stopped");
    ExitCode::FAILURE
}

/// Logs JSON lines on standard output, filtered by `BERTH_LOG` (default `info`) under the
/// caps of [`crate::logging`]. Each line of a request carries, in its `span`, the Lambda
/// request id.
pub fn init_logging() {
    crate::logging::init_logging(crate::logging::LogOutput::LambdaJson);
}
