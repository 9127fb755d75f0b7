//! `berth`: the registry as one local process.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use berth_runtime::{BlobLocation, MetadataLocation, S3Options, StorageConfig};
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

        /// How long in-flight requests may run after SIGINT or SIGTERM before they are cut
        /// off (an interrupted upload is left as it was before its last request).
        #[arg(long, env = "BERTH_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_seconds)]
        shutdown_grace: Duration,
    },
    /// Create what the configured storage needs before first use (the data directory; the
    /// DynamoDB table, idempotently). Safe to run again.
    Init {
        #[command(flatten)]
        storage: StorageArgs,
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
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
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
                shutdown_grace,
            } => serve(listen, storage.config(), shutdown_grace).await,
            Command::Init { storage } => {
                let config = storage.config();
                config
                    .init()
                    .await
                    .map_err(|e| format!("cannot initialise storage: {e}"))?;
                tracing::info!(blobs = ?config.blobs, metadata = ?config.metadata, "storage is ready");
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

async fn serve(listen: SocketAddr, storage: StorageConfig, grace: Duration) -> Result<(), String> {
    let registry = storage
        .open()
        .await
        .map_err(|e| format!("cannot open storage: {e}"))?;
    let router = berth_runtime::local_router(registry);
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let local_addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(listen = %local_addr, "berth is serving");

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let mut server = tokio::spawn(async move {
        axum::serve(listener, router)
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
