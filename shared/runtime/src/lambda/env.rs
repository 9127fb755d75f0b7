//! The functions' configuration, read from the environment contract the module documentation
//! describes: every variable is checked at start, and a wrong one is named.

use std::env::VarError;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use berth_http::{AccountSettings, ProjectCreation};

use crate::auth::AuthConfig;
use crate::token_keys::check_keys_path;
use crate::{BlobLocation, MetadataLocation, S3Options, StorageConfig};

/// The largest request body a function accepts, and so the largest chunk it advertises. A
/// Lambda event holds at most 6 MB, about 4.5 MiB of body once API Gateway has
/// base64-encoded it; 4 MiB leaves room for the rest of the event.
pub const MAX_BODY_LIMIT: u64 = 4 * 1024 * 1024;

/// The `OCI-Chunk-Min-Length` advertised unless configured.
pub const DEFAULT_CHUNK_MIN_LENGTH: u64 = 1024 * 1024;

/// How long presigned blob URLs stay valid unless configured.
pub const DEFAULT_PRESIGN_EXPIRY: Duration = Duration::from_secs(1200);

/// What a registry function is configured with.
#[derive(Debug, Clone)]
pub struct FunctionConfig {
    pub storage: StorageConfig,
    pub chunk_min_length: u64,
    /// Also the largest request body accepted.
    pub chunk_max_length: u64,
    /// The Parameter Store path of the token keys.
    pub token_keys: String,
    pub auth: AuthConfig,
    /// Where upload sessions continue, when an upload front is deployed.
    pub upload_front: Option<UploadFrontConfig>,
}

/// The upload front, as the push function sends clients to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadFrontConfig {
    /// Its base URL (`BERTH_UPLOAD_URL`).
    pub url: String,
    /// How long a grant lives (`BERTH_UPLOAD_GRANT_LIFETIME`).
    pub grant_lifetime: Duration,
}

/// A variable of the environment contract that is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

impl ConfigError {
    pub(super) fn new(variable: &'static str, problem: impl Into<String>) -> Self {
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

/// One variable's value: `None` when unset or empty.
pub(super) type Lookup<'a> = &'a dyn Fn(&'static str) -> Result<Option<String>, ConfigError>;

/// One variable of the process environment.
pub(super) fn env_var(name: &'static str) -> Result<Option<String>, ConfigError> {
    match std::env::var(name) {
        Ok(value) => Ok(Some(value)),
        Err(VarError::NotPresent) => Ok(None),
        Err(VarError::NotUnicode(_)) => Err(ConfigError::new(name, "is not valid UTF-8")),
    }
}

impl FunctionConfig {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(env_var)
    }

    /// Reads the configuration through `var`, which answers one variable's value.
    pub fn from_vars(
        var: impl Fn(&'static str) -> Result<Option<String>, ConfigError>,
    ) -> Result<Self, ConfigError> {
        let var: Lookup<'_> = &|name| Ok(var(name)?.filter(|value| !value.is_empty()));
        let storage = storage_from_vars(var)?;
        check_aws_vars(var)?;
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
        let token_keys = token_keys_from_vars(var)?;
        let defaults = AuthConfig::default();
        let auth = AuthConfig {
            service: var("BERTH_TOKEN_SERVICE")?.unwrap_or(defaults.service),
            realm: match var("BERTH_PUBLIC_URL")? {
                Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
                    Some(format!("{}/service/token", url.trim_end_matches('/')))
                }
                Some(url) => {
                    return Err(ConfigError::new(
                        "BERTH_PUBLIC_URL",
                        format!("is {url:?}, not an http:// or https:// URL"),
                    ));
                }
                None => None,
            },
            token_lifetime: match var("BERTH_TOKEN_LIFETIME")? {
                Some(text) => parse_seconds(&text)
                    .ok()
                    .filter(|lifetime| !lifetime.is_zero())
                    .ok_or_else(|| {
                        ConfigError::new(
                            "BERTH_TOKEN_LIFETIME",
                            format!("is {text:?}, not a number of seconds like 1800s"),
                        )
                    })?,
                None => defaults.token_lifetime,
            },
            accounts: AccountSettings {
                self_registration: flag(var, "BERTH_SELF_REGISTRATION", false)?,
                project_creation: match var("BERTH_PROJECT_CREATION")?.as_deref() {
                    None | Some("everyone") => ProjectCreation::Everyone,
                    Some("admins") => ProjectCreation::AdminsOnly,
                    Some(other) => {
                        return Err(ConfigError::new(
                            "BERTH_PROJECT_CREATION",
                            format!("is {other:?}, not everyone or admins"),
                        ));
                    }
                },
            },
        };
        let upload_front = match var("BERTH_UPLOAD_URL")? {
            Some(url) => Some(UploadFrontConfig {
                url: berth_http::front::base_url(&url)
                    .map_err(|problem| ConfigError::new("BERTH_UPLOAD_URL", problem))?,
                grant_lifetime: match var("BERTH_UPLOAD_GRANT_LIFETIME")? {
                    Some(text) => parse_seconds(&text)
                        .ok()
                        .filter(|lifetime| !lifetime.is_zero())
                        .ok_or_else(|| {
                            ConfigError::new(
                                "BERTH_UPLOAD_GRANT_LIFETIME",
                                format!("is {text:?}, not a number of seconds like 3600s"),
                            )
                        })?,
                    None => berth_auth::grant::DEFAULT_GRANT_LIFETIME,
                },
            }),
            None => None,
        };
        Ok(Self {
            storage,
            chunk_min_length,
            chunk_max_length,
            token_keys,
            auth,
            upload_front,
        })
    }
}

/// How long garbage collection leaves a blob alone after it was uploaded or linked:
/// `BERTH_GC_GRACE` (seconds, like `7200s`), two hours by default.
pub fn gc_grace_from_env() -> Result<Duration, ConfigError> {
    let var: Lookup<'_> = &|name| Ok(env_var(name)?.filter(|value| !value.is_empty()));
    gc_grace(var)
}

fn gc_grace(var: Lookup<'_>) -> Result<Duration, ConfigError> {
    match var("BERTH_GC_GRACE")? {
        Some(text) => parse_seconds(&text).map_err(|_| {
            ConfigError::new(
                "BERTH_GC_GRACE",
                format!("is {text:?}, not a number of seconds"),
            )
        }),
        None => Ok(berth_core::gc::DEFAULT_GRACE),
    }
}

/// What the `gc` function is configured with: the functions' storage, the grace window, and
/// how many steps (of [`berth_app::gc::STEP_BUDGET`] candidates) one invocation works,
/// `BERTH_GC_STEPS` (20 by default), well inside the function's time limit; a run with more
/// left goes on at the next invocation.
#[derive(Debug, Clone)]
pub struct GcSettings {
    pub storage: StorageConfig,
    pub grace: Duration,
    pub steps: usize,
    /// Candidates a step visits: `BERTH_GC_STEP_SIZE`, [`berth_app::gc::STEP_BUDGET`] by
    /// default.
    pub step_size: usize,
    /// Repositories one invocation applies tag retention to: `BERTH_RETENTION_STEPS`, 20 by
    /// default; a run with more left goes on at the next invocation.
    pub retention_steps: usize,
}

impl GcSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let var: Lookup<'_> = &|name| Ok(env_var(name)?.filter(|value| !value.is_empty()));
        let storage = storage_from_vars(var)?;
        check_aws_vars(var)?;
        let count = |name: &'static str, default: usize| -> Result<usize, ConfigError> {
            match var(name)? {
                Some(text) => text
                    .parse()
                    .ok()
                    .filter(|count| *count >= 1)
                    .ok_or_else(|| {
                        ConfigError::new(name, format!("is {text:?}, not a number from 1"))
                    }),
                None => Ok(default),
            }
        };
        Ok(Self {
            storage,
            grace: gc_grace(var)?,
            steps: count("BERTH_GC_STEPS", 20)?,
            step_size: count("BERTH_GC_STEP_SIZE", berth_app::gc::STEP_BUDGET)?,
            retention_steps: count("BERTH_RETENTION_STEPS", 20)?,
        })
    }
}

/// What the upload front is configured with: the functions' storage, and the path of the
/// token keys, of which it reads the upload grant key only.
#[derive(Debug, Clone)]
pub struct UploadFrontSettings {
    pub storage: StorageConfig,
    pub token_keys: String,
}

impl UploadFrontSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(env_var)
    }

    pub fn from_vars(
        var: impl Fn(&'static str) -> Result<Option<String>, ConfigError>,
    ) -> Result<Self, ConfigError> {
        let var: Lookup<'_> = &|name| Ok(var(name)?.filter(|value| !value.is_empty()));
        let storage = storage_from_vars(var)?;
        check_aws_vars(var)?;
        let token_keys = token_keys_from_vars(var)?;
        Ok(Self {
            storage,
            token_keys,
        })
    }
}

/// Replication's AWS resources, for the events function and the token function's
/// replication API.
#[cfg(feature = "aws-replication")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// The queue jobs are sent to (`BERTH_REPLICATION_QUEUE_URL`).
    pub queue_url: String,
    /// Its dead-letter queue (`BERTH_REPLICATION_DLQ_URL`), read by the replication API.
    pub dead_letter_queue_url: Option<String>,
    /// The key sealing remote credentials (`BERTH_REPLICATION_KMS_KEY`): id, ARN or alias.
    pub kms_key: String,
}

#[cfg(feature = "aws-replication")]
impl ReplicationConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(env_var)
    }

    /// The configuration when either of the required variables is set, `None` when neither
    /// is: the token function serves the replication API only where replication was
    /// deployed.
    pub fn from_env_if_set() -> Result<Option<Self>, ConfigError> {
        Self::from_vars_if_set(env_var)
    }

    pub fn from_vars_if_set(
        var: impl Fn(&'static str) -> Result<Option<String>, ConfigError>,
    ) -> Result<Option<Self>, ConfigError> {
        let set = |name| Ok::<_, ConfigError>(var(name)?.is_some_and(|value| !value.is_empty()));
        if !set("BERTH_REPLICATION_QUEUE_URL")? && !set("BERTH_REPLICATION_KMS_KEY")? {
            return Ok(None);
        }
        Self::from_vars(var).map(Some)
    }

    pub fn from_vars(
        var: impl Fn(&'static str) -> Result<Option<String>, ConfigError>,
    ) -> Result<Self, ConfigError> {
        let var: Lookup<'_> = &|name| Ok(var(name)?.filter(|value| !value.is_empty()));
        let url = |name: &'static str, value: String| {
            if value.starts_with("https://") || value.starts_with("http://") {
                Ok(value)
            } else {
                Err(ConfigError::new(
                    name,
                    format!(
                        "is {value:?}, not a queue URL like https://sqs.<region>.amazonaws.com/<account>/<queue>"
                    ),
                ))
            }
        };
        Ok(Self {
            queue_url: url(
                "BERTH_REPLICATION_QUEUE_URL",
                required(var, "BERTH_REPLICATION_QUEUE_URL")?,
            )?,
            dead_letter_queue_url: var("BERTH_REPLICATION_DLQ_URL")?
                .map(|value| url("BERTH_REPLICATION_DLQ_URL", value))
                .transpose()?,
            kms_key: required(var, "BERTH_REPLICATION_KMS_KEY")?,
        })
    }
}

/// The storage of a function: S3 and DynamoDB, never the function's own disk.
pub(super) fn storage_from_vars(var: Lookup<'_>) -> Result<StorageConfig, ConfigError> {
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
    Ok(StorageConfig {
        // Unused: both stores are remote.
        data_dir: PathBuf::new(),
        blobs,
        metadata,
        s3,
    })
}

/// The Parameter Store path of the token keys (`BERTH_TOKEN_KEYS_SSM`), checked.
fn token_keys_from_vars(var: Lookup<'_>) -> Result<String, ConfigError> {
    let path = required(var, "BERTH_TOKEN_KEYS_SSM")?;
    check_keys_path(&path).map_err(|problem| ConfigError::new("BERTH_TOKEN_KEYS_SSM", problem))?;
    Ok(path)
}

/// The AWS region and endpoint variables, checked as [`crate::aws::check_environment`] does.
fn check_aws_vars(var: Lookup<'_>) -> Result<(), ConfigError> {
    crate::aws::check_environment(|name| var(name).ok().flatten())
        .map_err(|(variable, problem)| ConfigError::new(variable, problem))
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

/// How long the audit log keeps an entry, in milliseconds: `BERTH_AUDIT_RETENTION_DAYS`, 1 to
/// 3650 days, 90 by default.
#[cfg(feature = "aws-replication")]
pub(super) fn audit_retention(var: Lookup<'_>) -> Result<u64, ConfigError> {
    const NAME: &str = "BERTH_AUDIT_RETENTION_DAYS";
    let days = match var(NAME)? {
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|days| (1..=3650).contains(days))
            .ok_or_else(|| ConfigError::new(NAME, format!("is {text:?}, not 1 to 3650 days")))?,
        None => 90,
    };
    Ok(days * 86_400_000)
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

    use berth_http::Role;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<FunctionConfig, ConfigError> {
        let vars: HashMap<&str, &str> = vars.iter().copied().collect();
        FunctionConfig::from_vars(|name| Ok(vars.get(name).map(|v| (*v).to_owned())))
    }

    #[test]
    fn malformed_names_regions_and_endpoints_stop_the_start() {
        for (variable, value) in [
            ("BERTH_METADATA", "dynamodb://tr"),
            ("BERTH_BLOB_STORE", "s3://My_Bucket"),
            ("AWS_REGION", "US East"),
            ("AWS_ENDPOINT_URL_DYNAMODB", "127.0.0.1:8000"),
        ] {
            let mut vars = vec![
                ("BERTH_BLOB_STORE", "s3://bucket"),
                ("BERTH_METADATA", "dynamodb://table"),
                ("BERTH_TOKEN_KEYS_SSM", "/berth/test/token-keys"),
            ];
            vars.retain(|(name, _)| *name != variable);
            vars.push((variable, value));
            assert_eq!(config(&vars).unwrap_err().variable, variable, "{value}");
        }
    }

    #[test]
    fn the_upload_front_is_read_when_set() {
        let base = [
            ("BERTH_BLOB_STORE", "s3://bucket"),
            ("BERTH_METADATA", "dynamodb://table"),
            ("BERTH_TOKEN_KEYS_SSM", "/berth/test/token-keys"),
        ];
        assert_eq!(config(&base).unwrap().upload_front, None);
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut vars = base.to_vec();
            vars.extend_from_slice(extra);
            config(&vars)
        };
        // An empty variable is unset, as SAM hands an unresolved Fn::If.
        assert_eq!(
            with(&[
                ("BERTH_UPLOAD_URL", ""),
                ("BERTH_UPLOAD_GRANT_LIFETIME", "")
            ])
            .unwrap()
            .upload_front,
            None
        );
        assert_eq!(
            with(&[("BERTH_UPLOAD_URL", "https://uploads.example.com/")])
                .unwrap()
                .upload_front,
            Some(UploadFrontConfig {
                url: "https://uploads.example.com".into(),
                grant_lifetime: Duration::from_secs(3600),
            })
        );
        assert_eq!(
            with(&[
                ("BERTH_UPLOAD_URL", "https://uploads.example.com"),
                ("BERTH_UPLOAD_GRANT_LIFETIME", "600s"),
            ])
            .unwrap()
            .upload_front
            .unwrap()
            .grant_lifetime,
            Duration::from_secs(600)
        );
        for (variable, value) in [
            ("BERTH_UPLOAD_URL", "http://uploads.example.com"),
            ("BERTH_UPLOAD_URL", "https://uploads.example.com/v2"),
        ] {
            assert_eq!(with(&[(variable, value)]).unwrap_err().variable, variable);
        }
        let error = with(&[
            ("BERTH_UPLOAD_URL", "https://uploads.example.com"),
            ("BERTH_UPLOAD_GRANT_LIFETIME", "0s"),
        ])
        .unwrap_err();
        assert_eq!(error.variable, "BERTH_UPLOAD_GRANT_LIFETIME");
    }

    const REQUIRED: [(&str, &str); 3] = [
        ("BERTH_BLOB_STORE", "s3://images/berth"),
        ("BERTH_METADATA", "dynamodb://berth"),
        ("BERTH_TOKEN_KEYS_SSM", "/berth/test/token-keys"),
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

        assert_eq!(config.token_keys, "/berth/test/token-keys");
        assert_eq!(config.auth.service, "berth");
        assert_eq!(config.auth.realm, None);
        assert_eq!(config.auth.token_lifetime, Duration::from_secs(1800));
        assert!(!config.auth.accounts.self_registration);
        assert_eq!(
            config.auth.accounts.project_creation,
            ProjectCreation::Everyone
        );

        let settings = config.settings(Role::Push, None);
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
            ("BERTH_TOKEN_SERVICE", "registry.example.com"),
            ("BERTH_PUBLIC_URL", "https://registry.example.com/"),
            ("BERTH_TOKEN_LIFETIME", "600s"),
            ("BERTH_SELF_REGISTRATION", "true"),
            ("BERTH_PROJECT_CREATION", "admins"),
        ]))
        .expect("a valid configuration");
        assert_eq!(config.auth.service, "registry.example.com");
        assert_eq!(
            config.auth.realm.as_deref(),
            Some("https://registry.example.com/service/token")
        );
        assert_eq!(config.auth.token_lifetime, Duration::from_secs(600));
        assert!(config.auth.accounts.self_registration);
        assert_eq!(
            config.auth.accounts.project_creation,
            ProjectCreation::AdminsOnly
        );
        assert!(config.storage.s3.force_path_style);
        assert!(config.storage.s3.redirect);
        assert_eq!(config.storage.s3.presign_expiry, Duration::from_secs(600));
        assert_eq!(config.chunk_min_length, 5);
        assert_eq!(config.chunk_max_length, 1000);
        assert_eq!(config.settings(Role::Pull, None).max_body, Some(1000));
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
                &[REQUIRED[0], ("BERTH_METADATA", "redis://x"), REQUIRED[2]],
                "BERTH_METADATA",
            ),
            (&[REQUIRED[0], REQUIRED[1]], "BERTH_TOKEN_KEYS_SSM"),
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
            ("BERTH_TOKEN_KEYS_SSM", "berth/keys"),
            ("BERTH_TOKEN_KEYS_SSM", "/berth/keys/"),
            ("BERTH_PUBLIC_URL", "registry.example.com"),
            ("BERTH_TOKEN_LIFETIME", "0s"),
            ("BERTH_TOKEN_LIFETIME", "30m"),
            ("BERTH_SELF_REGISTRATION", "yes"),
            ("BERTH_PROJECT_CREATION", "nobody"),
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

    #[cfg(feature = "aws-replication")]
    #[test]
    fn replication_variables() {
        let lookup = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &'static str| {
                Ok(vars
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned()))
            }
        };
        assert_eq!(ReplicationConfig::from_vars_if_set(lookup(&[])), Ok(None));
        assert_eq!(
            ReplicationConfig::from_vars_if_set(lookup(&[
                ("BERTH_REPLICATION_QUEUE_URL", ""),
                ("BERTH_REPLICATION_KMS_KEY", "")
            ])),
            Ok(None)
        );
        let full = ReplicationConfig::from_vars(lookup(&[
            (
                "BERTH_REPLICATION_QUEUE_URL",
                "https://sqs.eu-west-1.amazonaws.com/123456789012/berth-replication",
            ),
            (
                "BERTH_REPLICATION_DLQ_URL",
                "https://sqs.eu-west-1.amazonaws.com/123456789012/berth-replication-dlq",
            ),
            ("BERTH_REPLICATION_KMS_KEY", "alias/berth-replication"),
        ]))
        .expect("a valid configuration");
        assert_eq!(full.kms_key, "alias/berth-replication");
        assert!(full.dead_letter_queue_url.is_some());
        let wrong: [(&[(&str, &str)], &str); 3] = [
            (
                &[("BERTH_REPLICATION_KMS_KEY", "alias/k")],
                "BERTH_REPLICATION_QUEUE_URL",
            ),
            (
                &[("BERTH_REPLICATION_QUEUE_URL", "http://localhost:5000/q")],
                "BERTH_REPLICATION_KMS_KEY",
            ),
            (
                &[
                    ("BERTH_REPLICATION_QUEUE_URL", "berth-replication"),
                    ("BERTH_REPLICATION_KMS_KEY", "alias/k"),
                ],
                "BERTH_REPLICATION_QUEUE_URL",
            ),
        ];
        for (vars, variable) in wrong {
            let vars: HashMap<&str, &str> = vars.iter().copied().collect();
            let error = ReplicationConfig::from_vars_if_set(|name| {
                Ok(vars.get(name).map(|v| (*v).to_owned()))
            })
            .expect_err("a wrong configuration");
            assert_eq!(error.variable, variable, "{error}");
        }
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
