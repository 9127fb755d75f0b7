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
//! | `BERTH_TOKEN_KEYS_SSM` | the Parameter Store path of the token keys ([`crate::token_keys`]) | required |
//! | `BERTH_TOKEN_SERVICE` | the service tokens are issued for (`aud`) and by (`iss`) | `berth` |
//! | `BERTH_PUBLIC_URL` | the registry's URL for the token realm in challenges | each request's `Host` and `X-Forwarded-Proto` |
//! | `BERTH_TOKEN_LIFETIME` | access token lifetime (token function) | `1800s` |
//! | `BERTH_SELF_REGISTRATION` | anyone may create a user (token function) | `false` |
//! | `BERTH_PROJECT_CREATION` | who may create projects: `everyone` or `admins` (token function) | `everyone` |
//! | `BERTH_REPLICATION_QUEUE_URL` | the SQS queue replication jobs travel on (events and token functions) | required by the events function; without it and the key the token function serves no replication API |
//! | `BERTH_REPLICATION_DLQ_URL` | its dead-letter queue, shown by `GET /api/v2.0/replication/deadletters` (token function) | none: the listing is empty |
//! | `BERTH_UPLOAD_URL` | the upload front's base URL (`https://`): upload sessions continue there, with a grant signed by `<BERTH_TOKEN_KEYS_SSM>/upload` (push function) | none: uploads stay on the function, in chunks of at most `BERTH_CHUNK_MAX_LENGTH` |
//! | `BERTH_UPLOAD_GRANT_LIFETIME` | how long an upload grant lives, like `3600s` (push function) | `3600s` |
//! | `BERTH_REPLICATION_KMS_KEY` | the KMS key sealing remote registries' credentials: id, ARN or alias (events and token functions) | as the queue URL |
//!
//! plus the standard `AWS_*` variables, including `AWS_ENDPOINT_URL_S3`,
//! `AWS_ENDPOINT_URL_DYNAMODB`, `AWS_ENDPOINT_URL_SSM`, `AWS_ENDPOINT_URL_SQS` and
//! `AWS_ENDPOINT_URL_KMS`, which the SDK reads itself.
//!
//! The events function ([`start_events`]) needs only the storage and replication variables.
//! The upload front ([`start_upload_front`], `berth upload-front`) needs the storage
//! variables and `BERTH_TOKEN_KEYS_SSM`, of whose parameters it reads `<path>/upload` only.
//!
//! Auth is always on: the registry functions check every request's bearer token with the
//! public keys (`<path>/public`), and the token function, which serves `/service/token` and
//! the management API, signs with the private key (`<path>/private`).
//!
//! Blob bytes never cross a function on the way out: a blob `GET` always answers `307` with a
//! presigned S3 URL, so `BERTH_S3_REDIRECT=false` is refused.

mod env;
mod gateway;
mod start;

#[cfg(feature = "aws-replication")]
pub use self::env::ReplicationConfig;
pub use self::env::{
    ConfigError, DEFAULT_CHUNK_MIN_LENGTH, DEFAULT_PRESIGN_EXPIRY, FunctionConfig, GcSettings,
    MAX_BODY_LIMIT, UploadFrontConfig, UploadFrontSettings, gc_grace_from_env, parse_seconds,
};
#[cfg(feature = "aws-replication")]
pub use self::start::{AwsReplication, start_events};
pub use self::start::{
    GcHandler, StartError, init_logging, refuse_to_start, runtime_failed, start, start_gc,
    start_token, start_upload_front, upload_front_router,
};
