//! The registry functions' composition root: their configuration, read from the environment
//! once per cold start, the stores it selects, and the router each function serves.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `BERTH_BLOB_STORE` | `s3://bucket[/prefix]` | required |
//! | `BERTH_METADATA` | `dynamodb://table` | required |
//! | `BERTH_S3_PATH_STYLE` | address the bucket in the path (`true`/`false`) | `false` |
//! | `BERTH_S3_PRESIGN_EXPIRY` | lifetime of the presigned blob URLs, like `1200s` | `1200s` |
//! | `BERTH_CHUNK_MIN_LENGTH` | advertised `OCI-Chunk-Min-Length`, bytes | `1048576` |
//! | `BERTH_CHUNK_MAX_LENGTH` | advertised `OCI-Chunk-Max-Length` and the largest request body, bytes, at most 4194304 | `4194304` |
//! | `BERTH_LOG` | log filter (`tracing` `EnvFilter` syntax); logs are JSON lines | `info` |
//!
//! plus the standard `AWS_*` variables, including `AWS_ENDPOINT_URL_S3` and
//! `AWS_ENDPOINT_URL_DYNAMODB`, which the SDK reads itself.
//!
//! Blob bytes never cross a function on the way out: a blob `GET` always answers `307` with a
//! presigned S3 URL, so `BERTH_S3_REDIRECT=false` is refused.

use std::env::VarError;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::header::CONNECTION;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use berth_core::{Registry, RegistryError};
use berth_http::{Role, Router, Settings};
use lambda_http::request::RequestContext;

use crate::{BlobLocation, MetadataLocation, S3Options, StorageConfig};

/// The largest request body a function accepts, and so the largest chunk it advertises. A
/// Lambda event holds at most 6 MB, about 4.5 MiB of body once API Gateway has
/// base64-encoded it; 4 MiB leaves room for the rest of the event.
pub const MAX_BODY_LIMIT: u64 = 4 * 1024 * 1024;

/// The `OCI-Chunk-Min-Length` advertised unless configured.
pub const DEFAULT_CHUNK_MIN_LENGTH: u64 = 1024 * 1024;

/// How long presigned blob URLs stay valid unless configured.
pub const DEFAULT_PRESIGN_EXPIRY: Duration = Duration::from_secs(1200);

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What a registry function is configured with.
#[derive(Debug, Clone)]
pub struct FunctionConfig {
    pub storage: StorageConfig,
    pub chunk_min_length: u64,
    /// Also the largest request body accepted.
    pub chunk_max_length: u64,
}

/// A variable of the environment contract that is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

impl ConfigError {
    fn new(variable: &'static str, problem: impl Into<String>) -> Self {
        Self {
            variable,
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.variable, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// Why a function could not get ready for its first event.
#[derive(Debug)]
pub enum StartError {
    Config(ConfigError),
    Storage(RegistryError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(error) => write!(f, "configuration: {error}"),
            Self::Storage(error) => {
                write!(f, "storage: {}", error.cause().unwrap_or(error.message()))
            }
        }
    }
}

impl std::error::Error for StartError {}

/// One variable's value: `None` when unset or empty.
type Lookup<'a> = &'a dyn Fn(&'static str) -> Result<Option<String>, ConfigError>;

impl FunctionConfig {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(|name| match std::env::var(name) {
            Ok(value) => Ok(Some(value)),
            Err(VarError::NotPresent) => Ok(None),
            Err(VarError::NotUnicode(_)) => Err(ConfigError::new(name, "is not valid UTF-8")),
        })
    }

    /// Reads the configuration through `var`, which answers one variable's value.
    pub fn from_vars(
        var: impl Fn(&'static str) -> Result<Option<String>, ConfigError>,
    ) -> Result<Self, ConfigError> {
        let var: Lookup<'_> = &|name| Ok(var(name)?.filter(|value| !value.is_empty()));
        let blobs = match required(var, "BERTH_BLOB_STORE")?.parse() {
            Ok(s3 @ BlobLocation::S3 { .. }) => s3,
            Ok(BlobLocation::Local) => {
                return Err(ConfigError::new(
                    "BERTH_BLOB_STORE",
                    "must be s3://bucket[/prefix]: a function keeps nothing on its own disk",
                ));
            }
            Err(problem) => return Err(ConfigError::new("BERTH_BLOB_STORE", problem)),
        };
        let metadata = match required(var, "BERTH_METADATA")?.parse() {
            Ok(table @ MetadataLocation::DynamoDb { .. }) => table,
            Ok(MetadataLocation::Local) => {
                return Err(ConfigError::new(
                    "BERTH_METADATA",
                    "must be dynamodb://table: a function keeps nothing on its own disk",
                ));
            }
            Err(problem) => return Err(ConfigError::new("BERTH_METADATA", problem)),
        };
        if var("BERTH_S3_REDIRECT")?.is_some() && !flag(var, "BERTH_S3_REDIRECT", true)? {
            return Err(ConfigError::new(
                "BERTH_S3_REDIRECT",
                "cannot be false in a function: blob GETs always answer 307 to S3, \
                 since blob bytes never cross Lambda",
            ));
        }
        let s3 = S3Options {
            force_path_style: flag(var, "BERTH_S3_PATH_STYLE", false)?,
            redirect: true,
            presign_expiry: match var("BERTH_S3_PRESIGN_EXPIRY")? {
                Some(text) => parse_seconds(&text)
                    .map_err(|problem| ConfigError::new("BERTH_S3_PRESIGN_EXPIRY", problem))?,
                None => DEFAULT_PRESIGN_EXPIRY,
            },
        };
        let chunk_min_length = bytes(var, "BERTH_CHUNK_MIN_LENGTH", DEFAULT_CHUNK_MIN_LENGTH)?;
        let chunk_max_length = bytes(var, "BERTH_CHUNK_MAX_LENGTH", MAX_BODY_LIMIT)?;
        if chunk_max_length > MAX_BODY_LIMIT {
            return Err(ConfigError::new(
                "BERTH_CHUNK_MAX_LENGTH",
                format!(
                    "is {chunk_max_length} bytes, over the {MAX_BODY_LIMIT} a Lambda event can carry"
                ),
            ));
        }
        if chunk_min_length == 0 || chunk_min_length > chunk_max_length {
            return Err(ConfigError::new(
                "BERTH_CHUNK_MIN_LENGTH",
                format!(
                    "is {chunk_min_length} bytes; it must be from 1 to BERTH_CHUNK_MAX_LENGTH \
                     ({chunk_max_length})"
                ),
            ));
        }
        Ok(Self {
            storage: StorageConfig {
                // Unused: both stores are remote.
                data_dir: PathBuf::new(),
                blobs,
                metadata,
                s3,
            },
            chunk_min_length,
            chunk_max_length,
        })
    }

    /// How the router behaves in a function of `role`.
    pub fn settings(&self, role: Role) -> Settings {
        Settings {
            chunk_min_length: self.chunk_min_length,
            chunk_max_length: Some(self.chunk_max_length),
            role: Some(role),
            max_body: Some(self.chunk_max_length),
            contain_panics: true,
            // Token auth in the functions comes with the token function.
            auth: None,
        }
    }

    /// The router a function of `role` serves over `registry`.
    pub fn router(&self, registry: Arc<Registry>, role: Role) -> Router {
        berth_http::router(registry, self.settings(role))
            .layer(axum::middleware::map_request(gateway_request_id))
            .layer(axum::middleware::map_response(without_connection_header))
    }

    /// Opens the stores (making no request) and returns the router of a function of `role`.
    pub async fn open(&self, role: Role) -> Result<Router, RegistryError> {
        let registry = self.storage.open().await?;
        Ok(self.router(registry, role))
    }
}

/// Everything a registry function does once per cold start: the configuration from the
/// environment, the AWS clients, the router of `role`.
pub async fn start(role: Role) -> Result<Router, StartError> {
    let config = FunctionConfig::from_env().map_err(StartError::Config)?;
    // Said at every cold start until the functions check tokens (see the README).
    tracing::warn!("this function serves the registry API without authentication");
    config.open(role).await.map_err(StartError::Storage)
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

/// Logs JSON lines on standard output, filtered by `BERTH_LOG` (default `info`). Each line
/// of a request carries, in its `span`, the Lambda request id.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let (filter, unusable) = match std::env::var("BERTH_LOG") {
        Ok(text) => match EnvFilter::try_new(&text) {
            Ok(filter) => (filter, None),
            Err(error) => (EnvFilter::new("info"), Some((text, error))),
        },
        Err(_) => (EnvFilter::new("info"), None),
    };
    let installed = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stdout)
        .try_init();
    if installed.is_ok()
        && let Some((text, error)) = unusable
    {
        tracing::warn!(BERTH_LOG = text, %error, "BERTH_LOG is not a log filter; logging at info");
    }
}

/// Gives a request without an `X-Request-Id` the id API Gateway logs it under.
async fn gateway_request_id(mut request: Request) -> Request {
    if !request.headers().contains_key(&REQUEST_ID)
        && let Some(RequestContext::ApiGatewayV2(context)) = request.extensions().get()
        && let Some(value) = context
            .request_id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok())
    {
        request.headers_mut().insert(REQUEST_ID, value);
    }
    request
}

/// Drops `Connection`: it speaks of the client's connection, which API Gateway holds, not
/// the function.
async fn without_connection_header(mut response: Response) -> Response {
    response.headers_mut().remove(CONNECTION);
    response
}

fn required(var: Lookup<'_>, name: &'static str) -> Result<String, ConfigError> {
    var(name)?.ok_or_else(|| ConfigError::new(name, "is not set"))
}

fn flag(var: Lookup<'_>, name: &'static str, default: bool) -> Result<bool, ConfigError> {
    let Some(text) = var(name)? else {
        return Ok(default);
    };
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ConfigError::new(
            name,
            format!("is {text:?}, not true or false"),
        )),
    }
}

fn bytes(var: Lookup<'_>, name: &'static str, default: u64) -> Result<u64, ConfigError> {
    match var(name)? {
        Some(text) => text
            .parse()
            .map_err(|_| ConfigError::new(name, format!("is {text:?}, not a number of bytes"))),
        None => Ok(default),
    }
}

/// A number of seconds, like `1200s` or `1200`.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let number = text.strip_suffix('s').unwrap_or(text);
    number
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| format!("is {text:?}, not a number of seconds like 1200s"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<FunctionConfig, ConfigError> {
        let vars: HashMap<&str, &str> = vars.iter().copied().collect();
        FunctionConfig::from_vars(|name| Ok(vars.get(name).map(|v| (*v).to_owned())))
    }

    const REQUIRED: [(&str, &str); 2] = [
        ("BERTH_BLOB_STORE", "s3://images/berth"),
        ("BERTH_METADATA", "dynamodb://berth"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        REQUIRED.iter().chain(extra).copied().collect()
    }

    #[test]
    fn defaults() {
        let config = config(&REQUIRED).expect("a valid configuration");
        assert_eq!(
            config.storage.blobs,
            BlobLocation::S3 {
                bucket: "images".into(),
                prefix: Some("berth".into())
            }
        );
        assert_eq!(
            config.storage.metadata,
            MetadataLocation::DynamoDb {
                table: "berth".into()
            }
        );
        assert_eq!(
            config.storage.s3,
            S3Options {
                force_path_style: false,
                redirect: true,
                presign_expiry: Duration::from_secs(1200),
            }
        );
        assert_eq!(config.chunk_min_length, 1_048_576);
        assert_eq!(config.chunk_max_length, 4_194_304);

        let settings = config.settings(Role::Push);
        assert_eq!(settings.role, Some(Role::Push));
        assert_eq!(settings.chunk_min_length, 1_048_576);
        assert_eq!(settings.chunk_max_length, Some(4_194_304));
        assert_eq!(settings.max_body, Some(4_194_304));
        assert!(settings.contain_panics);
    }

    #[test]
    fn every_variable_is_read() {
        let config = config(&with(&[
            ("BERTH_S3_PATH_STYLE", "true"),
            ("BERTH_S3_PRESIGN_EXPIRY", "600s"),
            ("BERTH_S3_REDIRECT", "true"),
            ("BERTH_CHUNK_MIN_LENGTH", "5"),
            ("BERTH_CHUNK_MAX_LENGTH", "1000"),
        ]))
        .expect("a valid configuration");
        assert!(config.storage.s3.force_path_style);
        assert!(config.storage.s3.redirect);
        assert_eq!(config.storage.s3.presign_expiry, Duration::from_secs(600));
        assert_eq!(config.chunk_min_length, 5);
        assert_eq!(config.chunk_max_length, 1000);
        assert_eq!(config.settings(Role::Pull).max_body, Some(1000));
    }

    #[test]
    fn empty_values_count_as_unset() {
        let config = config(&with(&[
            ("BERTH_S3_PATH_STYLE", ""),
            ("BERTH_CHUNK_MAX_LENGTH", ""),
        ]))
        .expect("a valid configuration");
        assert!(!config.storage.s3.force_path_style);
        assert_eq!(config.chunk_max_length, MAX_BODY_LIMIT);
        assert_eq!(
            self::config(&[("BERTH_BLOB_STORE", ""), REQUIRED[1]])
                .expect_err("a required variable is empty")
                .variable,
            "BERTH_BLOB_STORE"
        );
    }

    #[test]
    fn wrong_configurations_name_their_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[REQUIRED[1]], "BERTH_BLOB_STORE"),
            (&[REQUIRED[0]], "BERTH_METADATA"),
            (
                &[("BERTH_BLOB_STORE", "local"), REQUIRED[1]],
                "BERTH_BLOB_STORE",
            ),
            (
                &[("BERTH_BLOB_STORE", "file:///tmp"), REQUIRED[1]],
                "BERTH_BLOB_STORE",
            ),
            (
                &[REQUIRED[0], ("BERTH_METADATA", "local")],
                "BERTH_METADATA",
            ),
            (
                &[REQUIRED[0], ("BERTH_METADATA", "redis://x")],
                "BERTH_METADATA",
            ),
        ];
        for (vars, variable) in cases {
            let error = config(vars).expect_err("a wrong configuration");
            assert_eq!(error.variable, *variable, "{vars:?}: {error}");
        }
        let wrong_values = [
            ("BERTH_S3_PATH_STYLE", "sometimes"),
            ("BERTH_S3_REDIRECT", "false"),
            ("BERTH_S3_PRESIGN_EXPIRY", "20m"),
            ("BERTH_CHUNK_MIN_LENGTH", "1MiB"),
            ("BERTH_CHUNK_MIN_LENGTH", "0"),
            ("BERTH_CHUNK_MAX_LENGTH", "4194305"),
            ("BERTH_CHUNK_MAX_LENGTH", "-1"),
        ];
        for (name, value) in wrong_values {
            let error = config(&with(&[(name, value)])).expect_err("a wrong value");
            assert_eq!(error.variable, name, "{name}={value}: {error}");
        }
        let error = config(&with(&[
            ("BERTH_CHUNK_MIN_LENGTH", "2000"),
            ("BERTH_CHUNK_MAX_LENGTH", "1000"),
        ]))
        .expect_err("a minimum above the maximum");
        assert_eq!(error.variable, "BERTH_CHUNK_MIN_LENGTH");
    }

    #[test]
    fn the_chunk_limit_is_explained() {
        let error =
            config(&with(&[("BERTH_CHUNK_MAX_LENGTH", "8388608")])).expect_err("over the limit");
        assert_eq!(
            error.to_string(),
            "BERTH_CHUNK_MAX_LENGTH is 8388608 bytes, over the 4194304 a Lambda event can carry"
        );
    }
}
