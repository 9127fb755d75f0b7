//! `berth`: the registry as one local process.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the registry locally on embedded storage.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "BERTH_LISTEN", default_value = "127.0.0.1:5000")]
        listen: SocketAddr,

        /// Directory holding blobs and metadata.
        #[arg(long, env = "BERTH_DATA_DIR", default_value = "./berth-data")]
        data_dir: PathBuf,

        /// How long in-flight requests may run after SIGINT or SIGTERM before they are cut
        /// off (an interrupted upload is left as it was before its last request).
        #[arg(long, env = "BERTH_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_seconds)]
        shutdown_grace: Duration,
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
                data_dir,
                shutdown_grace,
            } => serve(listen, data_dir, shutdown_grace).await,
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

async fn serve(listen: SocketAddr, data_dir: PathBuf, grace: Duration) -> Result<(), String> {
    let registry = berth_runtime::LocalStorage::new(&data_dir)
        .open()
        .map_err(|e| format!("cannot open storage in {}: {e}", data_dir.display()))?;
    let router = berth_runtime::local_router(registry);
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let local_addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(listen = %local_addr, data_dir = %data_dir.display(), "berth is serving");

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
