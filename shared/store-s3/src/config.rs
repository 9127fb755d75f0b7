//! [`S3Config`]: where the blob store keeps its objects and how it serves them.

use std::time::Duration;

use berth_core::{RegistryError, Result};

use crate::staging::{MAX_PART_SIZE, MIN_PART_SIZE};

/// The longest a SigV4 presigned URL may stay valid.
const MAX_PRESIGN_EXPIRY: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Settings of an [`S3BlobStore`](crate::S3BlobStore).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket holding blobs and upload staging.
    pub bucket: String,
    /// A key prefix under which every object lives, so that one bucket can hold several
    /// registries (or other data). `None` or empty: the bucket's root.
    pub prefix: Option<String>,
    /// The S3 endpoint, for S3-compatible services. `None` keeps the SDK's choice, which
    /// honours `AWS_ENDPOINT_URL_S3` and `AWS_ENDPOINT_URL`.
    pub endpoint_url: Option<String>,
    /// Addresses the bucket in the path (`http://host/bucket/key`) instead of the host name.
    /// MinIO and Garage usually need it. `false` keeps the client's own setting.
    pub force_path_style: bool,
    /// The region requests are signed for (Garage's default is `garage`). `None` keeps the
    /// SDK's choice (`AWS_REGION`, the profile, ...).
    pub region: Option<String>,
    /// Whether blob reads are answered with a presigned URL instead of streamed bytes.
    pub redirect: bool,
    /// How long a presigned URL stays valid: at most 7 days. A URL signed with temporary
    /// credentials (a Lambda role) also stops working when those credentials expire.
    pub presign_expiry: Duration,
    /// Size of the full parts an upload is staged in, from 5 MiB to 64 MiB. An append holds
    /// at most two parts in memory; a blob has at most 10,000 parts (78 GiB at 8 MiB).
    pub part_size: usize,
}

impl S3Config {
    /// The defaults for `bucket`: no prefix, the SDK's endpoint and region, redirects on
    /// with 20-minute URLs, 8 MiB parts.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            prefix: None,
            endpoint_url: None,
            force_path_style: false,
            region: None,
            redirect: true,
            presign_expiry: Duration::from_secs(20 * 60),
            part_size: 8 * 1024 * 1024,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |what: String| {
            Err(RegistryError::internal(format!(
                "invalid S3 blob store configuration: {what}"
            )))
        };
        if self.bucket.is_empty() {
            return invalid("the bucket name is empty".into());
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return invalid(format!(
                "part size {} is outside {MIN_PART_SIZE}..={MAX_PART_SIZE} bytes",
                self.part_size
            ));
        }
        if self.redirect
            && (self.presign_expiry.is_zero() || self.presign_expiry > MAX_PRESIGN_EXPIRY)
        {
            return invalid(format!(
                "presigned URLs must expire within 7 days, not {:?}",
                self.presign_expiry
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        S3Config::new("bucket").validate().expect("valid defaults");
    }

    #[test]
    fn nonsense_is_refused() {
        let cases = [
            S3Config::new(""),
            S3Config {
                part_size: MIN_PART_SIZE - 1,
                ..S3Config::new("b")
            },
            S3Config {
                part_size: MAX_PART_SIZE + 1,
                ..S3Config::new("b")
            },
            S3Config {
                presign_expiry: Duration::ZERO,
                ..S3Config::new("b")
            },
            S3Config {
                presign_expiry: MAX_PRESIGN_EXPIRY + Duration::from_secs(1),
                ..S3Config::new("b")
            },
        ];
        for config in cases {
            assert!(config.validate().is_err(), "{config:?}");
        }
        let no_redirect = S3Config {
            redirect: false,
            presign_expiry: Duration::ZERO,
            ..S3Config::new("b")
        };
        no_redirect
            .validate()
            .expect("the expiry does not matter without redirects");
    }
}
