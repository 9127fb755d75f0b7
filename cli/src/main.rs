//! `berth`: the registry as one local process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use berth_runtime::auth::{Auth, AuthConfig, bootstrap, local_keys, rotate_local_keys};
use berth_runtime::token_keys::{KEPT_PREVIOUS_KEYS, SsmKeys};
use berth_runtime::{
    BlobLocation, EventBus, EventLog, EventRecorder, MetadataLocation, Records, Retries, Routes,
    S3Options, StorageConfig, WebhookSender,
};
use clap::{Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Debug, Parser)]
#[command(name = "berth", version, about = "Berth, a container image registry")]
struct Cli {
    /// Log line format.
    #[arg(long, env = "BERTH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Where the registry keeps blobs and metadata.
#[derive(Debug, clap::Args)]
struct StorageArgs {
    /// Directory holding embedded blobs and metadata.
    #[arg(long, env = "BERTH_DATA_DIR", default_value = "./berth-data")]
    data_dir: PathBuf,

    /// Blob store: `local` (in the data directory) or `s3://bucket[/prefix]`. S3 takes the
    /// standard AWS_* variables, including AWS_ENDPOINT_URL_S3 for MinIO or Garage.
    #[arg(long, env = "BERTH_BLOB_STORE", default_value = "local")]
    blob_store: BlobLocation,

    /// Metadata store: `local` (in the data directory) or `dynamodb://table`. DynamoDB takes
    /// the standard AWS_* variables, including AWS_ENDPOINT_URL_DYNAMODB.
    #[arg(long, env = "BERTH_METADATA", default_value = "local")]
    metadata: MetadataLocation,

    /// Address S3 buckets in the path (MinIO and Garage need it).
    #[arg(long, env = "BERTH_S3_PATH_STYLE", default_value_t = false)]
    s3_path_style: bool,

    /// Answer blob GETs with a presigned S3 URL (`true`) or stream the bytes (`false`).
    #[arg(long, env = "BERTH_S3_REDIRECT", default_value_t = true, action = clap::ArgAction::Set)]
    s3_redirect: bool,

    /// How long presigned S3 URLs stay valid.
    #[arg(long, env = "BERTH_S3_PRESIGN_EXPIRY", default_value = "1200s", value_parser = parse_seconds)]
    s3_presign_expiry: Duration,
}

impl StorageArgs {
    fn config(self) -> StorageConfig {
        StorageConfig {
            data_dir: self.data_dir,
            blobs: self.blob_store,
            metadata: self.metadata,
            s3: S3Options {
                force_path_style: self.s3_path_style,
                redirect: self.s3_redirect,
                presign_expiry: self.s3_presign_expiry,
            },
        }
    }
}

/// How the registry authenticates and authorizes.
#[derive(Debug, clap::Args)]
struct AuthArgs {
    /// Serve with no authentication at all: anyone may push and pull anything, and projects
    /// appear on first push. For throwaway registries only.
    #[arg(long, env = "BERTH_OPEN", default_value_t = false)]
    open: bool,

    /// The service name tokens are issued for and checked against.
    #[arg(long, env = "BERTH_TOKEN_SERVICE", default_value = "berth")]
    token_service: String,

    /// The URL clients reach the registry at (for example https://registry.example.com), for
    /// the token realm in challenges. Default: the scheme and host each request was sent to.
    #[arg(long, env = "BERTH_PUBLIC_URL")]
    public_url: Option<String>,

    /// How long an access token is valid.
    #[arg(long, env = "BERTH_TOKEN_LIFETIME", default_value = "1800s", value_parser = parse_seconds)]
    token_lifetime: Duration,

    /// Let anyone create a user account for themselves.
    #[arg(long, env = "BERTH_SELF_REGISTRATION", default_value_t = false, action = clap::ArgAction::Set)]
    self_registration: bool,

    /// Who may create projects.
    #[arg(long, env = "BERTH_PROJECT_CREATION", value_enum, default_value_t = ProjectCreationArg::Everyone)]
    project_creation: ProjectCreationArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProjectCreationArg {
    /// Any user.
    Everyone,
    /// System administrators only.
    Admins,
}

impl AuthArgs {
    fn config(&self) -> AuthConfig {
        AuthConfig {
            service: self.token_service.clone(),
            realm: self
                .public_url
                .as_ref()
                .map(|url| format!("{}/service/token", url.trim_end_matches('/'))),
            token_lifetime: self.token_lifetime,
            accounts: berth_runtime::AccountSettings {
                self_registration: self.self_registration,
                project_creation: match self.project_creation {
                    ProjectCreationArg::Everyone => berth_runtime::ProjectCreation::Everyone,
                    ProjectCreationArg::Admins => berth_runtime::ProjectCreation::AdminsOnly,
                },
            },
        }
    }
}

/// The key that seals remote registries' credentials (base64 of 32 bytes), from the
/// environment only. Without it, a key made on first start in the data directory.
const SECRET_KEY_VAR: &str = "BERTH_SECRET_KEY";

/// The password of the first administrator, from the environment only (never a flag, which
/// would show in the process list).
const ADMIN_PASSWORD_VAR: &str = "BERTH_ADMIN_PASSWORD";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole registry as one process: embedded storage by default, S3 and DynamoDB
    /// when configured.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "BERTH_LISTEN", default_value = "127.0.0.1:5000")]
        listen: SocketAddr,

        #[command(flatten)]
        storage: StorageArgs,

        #[command(flatten)]
        auth: AuthArgs,

        /// How long in-flight requests may run after SIGINT or SIGTERM before they are cut
        /// off (an interrupted upload is left as it was before its last request).
        #[arg(long, env = "BERTH_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_seconds)]
        shutdown_grace: Duration,

        /// Keep the audit log and count pulls and pushes (`false`: events are only logged).
        #[arg(long, env = "BERTH_AUDIT", default_value_t = true, action = clap::ArgAction::Set)]
        audit: bool,

        /// How many days the audit log keeps an entry.
        #[arg(long, env = "BERTH_AUDIT_RETENTION_DAYS", default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=3650))]
        audit_retention_days: u32,

        /// How long garbage collection leaves a blob alone after it was uploaded or linked,
        /// so that a push between its last layer and its manifest is not refused.
        #[arg(long, env = "BERTH_GC_GRACE", default_value = "7200s", value_parser = parse_seconds)]
        gc_grace: Duration,
    },
    /// Create what the configured storage needs before first use (the data directory; the
    /// DynamoDB table, idempotently), and the first accounts: the system administrator
    /// `admin` (password from BERTH_ADMIN_PASSWORD, or made up and printed once) and the
    /// public project `library`. Safe to run again.
    Init {
        #[command(flatten)]
        storage: StorageArgs,

        /// Also make the token signing key of a Lambda deployment in AWS Systems Manager
        /// Parameter Store under this path (PATH/private, a SecureString, and PATH/public), if
        /// there is none yet; the stack's TokenKeysPath output names it.
        #[arg(long, env = "BERTH_TOKEN_KEYS_SSM", value_name = "PATH")]
        token_keys_ssm: Option<String>,

        /// The KMS key that encrypts the signing key (the stack's TokenKeysKmsKey output), so
        /// that only the token function can decrypt it. Default: Parameter Store's aws/ssm
        /// key, which anyone allowed to read the parameter can decrypt with.
        #[arg(long, value_name = "KEY", requires = "token_keys_ssm")]
        token_keys_kms_key: Option<String>,
    },
    /// Serve upload sessions only, for a Lambda deployment: the upload front. The push
    /// function, given BERTH_UPLOAD_URL, sends each upload session here with a grant; the
    /// front streams its bytes, of any size, to the same S3 bucket and DynamoDB table. It
    /// reads BERTH_BLOB_STORE (s3://), BERTH_METADATA (dynamodb://), BERTH_S3_PATH_STYLE and
    /// BERTH_TOKEN_KEYS_SSM (it reads PATH/upload, the grant key, only) as the functions do,
    /// and answers GET /health.
    UploadFront {
        /// Address to listen on.
        #[arg(long, env = "BERTH_LISTEN", default_value = "0.0.0.0:8080")]
        listen: SocketAddr,

        /// How long in-flight uploads may run after SIGINT or SIGTERM before they are cut
        /// off (an interrupted upload is left as it was before its last request).
        #[arg(long, env = "BERTH_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_seconds)]
        shutdown_grace: Duration,
    },
    /// Start signing tokens with a new key. The old key moves to the data directory's
    /// token-keys/previous/ and still verifies the tokens it signed, so nobody is logged
    /// out; delete it from there once its tokens have expired. Restart `berth serve` after.
    ///
    /// With --token-keys-ssm, rotates the key of a Lambda deployment in Parameter Store
    /// instead: the new public key is published first, the last few previous keys keep
    /// verifying, and the functions pick the new key up without a redeploy.
    RotateKey {
        /// Directory holding embedded blobs, metadata and token keys.
        #[arg(long, env = "BERTH_DATA_DIR", default_value = "./berth-data")]
        data_dir: PathBuf,

        /// The Parameter Store path of a Lambda deployment's token keys. (Never taken from
        /// the environment: a rotation names what it rotates.)
        #[arg(long, value_name = "PATH")]
        token_keys_ssm: Option<String>,

        /// The KMS key for the new signing key; default: the one the current key has.
        #[arg(long, value_name = "KEY", requires = "token_keys_ssm")]
        token_keys_kms_key: Option<String>,
    },
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let number = text.strip_suffix('s').unwrap_or(text);
    number
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| format!("{text:?} is not a number of seconds, like 30s"))
}

fn init_logging(format: LogFormat) {
    use berth_runtime::logging::LogOutput;
    berth_runtime::logging::init_logging(match format {
        LogFormat::Text => LogOutput::Text,
        LogFormat::Json => LogOutput::Json,
    });
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("berth: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve {
                listen,
                storage,
                auth,
                shutdown_grace,
                audit,
                audit_retention_days,
                gc_grace,
            } => {
                let retention =
                    audit.then(|| Duration::from_secs(u64::from(audit_retention_days) * 86_400));
                let options = ServeOptions {
                    shutdown_grace,
                    audit_retention: retention,
                    gc_grace,
                };
                serve(listen, storage.config(), &auth, options).await
            }
            Command::UploadFront {
                listen,
                shutdown_grace,
            } => {
                let router = berth_runtime::lambda::start_upload_front()
                    .await
                    .map_err(|e| format!("cannot start the upload front: {e}"))?;
                run_server(
                    listen,
                    router,
                    shutdown_grace,
                    "the upload front is serving",
                )
                .await
            }
            Command::Init {
                storage,
                token_keys_ssm,
                token_keys_kms_key,
            } => {
                init(
                    storage.config(),
                    token_keys_ssm.as_deref(),
                    token_keys_kms_key,
                )
                .await
            }
            Command::RotateKey {
                token_keys_ssm: Some(path),
                token_keys_kms_key,
                ..
            } => {
                let keys = SsmKeys::new(&path)
                    .await
                    .map_err(|e| format!("cannot rotate the token key: {e}"))?
                    .with_kms_key(token_keys_kms_key);
                let kid = keys
                    .rotate()
                    .await
                    .map_err(|e| format!("cannot rotate the token key: {e}"))?;
                println!(
                    "berth: the token key {kid} signs from now on (in each token function from \
                     its next cold start; the registry functions accept it at once); the last \
                     {KEPT_PREVIOUS_KEYS} keys still verify their tokens"
                );
                Ok(())
            }
            Command::RotateKey { data_dir, .. } => {
                let retired = rotate_local_keys(&data_dir)
                    .map_err(|e| format!("cannot rotate the token key: {e}"))?;
                match retired {
                    Some(retired) => println!(
                        "berth: a new token key signs from now on (after a restart of berth \
                         serve); the old one, {}, still verifies its tokens",
                        retired.display()
                    ),
                    None => println!(
                        "berth: there was no token key in {}; a new one signs from now on",
                        data_dir.display()
                    ),
                }
                Ok(())
            }
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("berth: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn init(
    config: StorageConfig,
    token_keys_ssm: Option<&str>,
    kms_key: Option<String>,
) -> Result<(), String> {
    if let Some(path) = token_keys_ssm {
        if kms_key.is_none() {
            tracing::warn!(
                "the token signing key is encrypted with Parameter Store's aws/ssm key: anyone \
                 allowed to read the parameter can decrypt it (give --token-keys-kms-key)"
            );
        }
        let keys = SsmKeys::new(path)
            .await
            .map_err(|e| format!("--token-keys-ssm: {e}"))?
            .with_kms_key(kms_key);
        let (kid, made) = keys
            .ensure()
            .await
            .map_err(|e| format!("cannot make the token keys: {e}"))?;
        if keys
            .ensure_upload_key()
            .await
            .map_err(|e| format!("cannot make the upload grant key: {e}"))?
        {
            tracing::info!(parameter = keys.upload_name(), "made the upload grant key");
        }
        if made {
            tracing::info!(
                kid,
                parameter = keys.private_name(),
                "made the token signing key"
            );
        } else {
            tracing::info!(
                kid,
                parameter = keys.private_name(),
                "the token signing key exists"
            );
        }
    }
    config
        .init()
        .await
        .map_err(|e| format!("cannot initialise storage: {e}"))?;
    let stores = config
        .open_stores()
        .await
        .map_err(|e| format!("cannot open storage: {e}"))?;
    let hasher = berth_runtime::auth::PasswordHasher::new();
    first_accounts(&*stores.accounts, &hasher).await?;
    tracing::info!(blobs = ?config.blobs, metadata = ?config.metadata, "storage is ready");
    Ok(())
}

/// Creates the first administrator and the public project if missing, and shows a made-up
/// administrator password once.
async fn first_accounts(
    accounts: &dyn berth_runtime::AccountStore,
    hasher: &berth_runtime::auth::PasswordHasher,
) -> Result<(), String> {
    let password = std::env::var(ADMIN_PASSWORD_VAR)
        .ok()
        .filter(|p| !p.is_empty());
    let generated = bootstrap(accounts, hasher, password.as_deref())
        .await
        .map_err(|e| format!("cannot create the first accounts: {e}"))?;
    if let Some(password) = generated {
        // Shown once, on the terminal, never in the log.
        eprintln!(
            "berth: created the system administrator \"admin\" with the password\n\n    \
             {password}\n\nberth: it is not shown again; change it with PUT \
             /api/v2.0/users/admin/password (or set {ADMIN_PASSWORD_VAR} before the first start)"
        );
    }
    Ok(())
}

/// How `berth serve` behaves beyond its storage and auth.
#[derive(Debug)]
struct ServeOptions {
    shutdown_grace: Duration,
    /// How long audit entries are kept; `None`: no audit log.
    audit_retention: Option<Duration>,
    gc_grace: Duration,
}

async fn serve(
    listen: SocketAddr,
    storage: StorageConfig,
    auth_args: &AuthArgs,
    options: ServeOptions,
) -> Result<(), String> {
    let ServeOptions {
        shutdown_grace: grace,
        audit_retention,
        gc_grace,
    } = options;
    let stores = storage
        .open_stores()
        .await
        .map_err(|e| format!("cannot open storage: {e}"))?;
    let auth = if auth_args.open {
        tracing::warn!("auth is OFF (--open): anyone may push, pull and delete anything");
        eprintln!(
            "berth: WARNING: serving with NO AUTHENTICATION (--open). Anyone who can reach \
             {listen} may push, pull and delete any image. Use it for throwaway registries only."
        );
        None
    } else {
        let ring = local_keys(&storage.data_dir)
            .map_err(|e| format!("cannot load the token keys: {e}"))?;
        let auth = Auth::new(auth_args.config(), &ring, stores.accounts.clone())
            .map_err(|e| format!("cannot set up token auth: {e}"))?;
        first_accounts(&*stores.accounts, auth.tokens.password_hasher()).await?;
        Some(auth)
    };
    let secret_key = std::env::var(SECRET_KEY_VAR).ok();
    let secrets =
        berth_runtime::replication::local_secrets(&storage.data_dir, secret_key.as_deref())
            .map_err(|e| format!("cannot set up the replication secret key: {e}"))?;
    // Every event becomes a log line and, what it records, an audit entry; replication
    // follows pushes and deletions.
    let mut events = EventBus::new().subscribe(Arc::new(EventLog));
    let records = match audit_retention {
        Some(retention) => Records {
            audit: stores.audit.clone().map(|audit| (audit, retention)),
            statistics: stores.statistics.clone(),
        },
        None => Records::default(),
    };
    if !records.is_empty() {
        events = events.subscribe(Arc::new(EventRecorder::start(records)));
    }
    if let Some(webhooks) = &stores.webhooks {
        let sender = WebhookSender::start(webhooks.clone(), Retries::default())
            .map_err(|e| format!("cannot start webhook deliveries: {e}"))?;
        events = events.subscribe(Arc::new(sender));
    }
    let replication = berth_runtime::replication::start_local(&stores, secrets, events, |r| r);
    let gc = stores.start_gc(replication.events.clone(), gc_grace);
    let retention =
        stores.start_retention(replication.registry.clone(), replication.events.clone());
    let mut routes = Routes::new()
        .registry(
            replication.registry.clone(),
            berth_runtime::Settings::default(),
        )
        .replication(|management| replication.api(management))
        .events(replication.events.clone())
        .audit(stores.audit.clone())
        .statistics(stores.statistics.clone())
        .quotas(stores.quotas.clone())
        .webhooks(stores.webhooks.clone())
        .gc(gc)
        .retention(retention);
    if let Some(auth) = &auth {
        routes = routes.accounts(auth, stores.accounts.clone(), stores.metadata.clone());
    }
    let router = routes
        .build()
        .layer(axum::middleware::from_fn(berth_runtime::remember_peer));
    run_server(listen, router, grace, "berth is serving").await
}

/// Serves `router` on `listen` until SIGINT or SIGTERM, then lets in-flight requests finish
/// for up to `grace`.
async fn run_server(
    listen: SocketAddr,
    router: axum::Router,
    grace: Duration,
    serving: &'static str,
) -> Result<(), String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let local_addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(listen = %local_addr, "{serving}");

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let mut server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            stop_rx.changed().await.ok();
        })
        .await
    });
    tokio::select! {
        finished = &mut server => {
            return finished
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("server failed: {e}"));
        }
        signal = shutdown_signal() => signal?,
    }
    tracing::info!(
        grace_seconds = grace.as_secs(),
        "shutting down: finishing in-flight requests"
    );
    stop_tx.send(true).ok();
    match tokio::time::timeout(grace, &mut server).await {
        Ok(_) => tracing::info!("stopped"),
        Err(_) => {
            server.abort();
            tracing::warn!("grace period over: in-flight requests were cut off");
        }
    }
    Ok(())
}

async fn shutdown_signal() -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted.map_err(|e| format!("cannot watch SIGINT: {e}")),
        _ = terminate.recv() => Ok(()),
    }
}
