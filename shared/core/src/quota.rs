//! Storage quotas: how many bytes a project's artifacts hold, and how many they may.
//!
//! A project's usage counts each distinct digest its manifests name once: the manifests
//! themselves, their configs and their layers. A metadata store that implements
//! [`QuotaStore`] keeps, per project and digest, how many (repository, manifest) pairs of
//! the project name it ([`charges`]), and the project's usage, the sum of the sizes whose
//! count is above zero. A count that crosses zero and the usage change in the same write,
//! and a write that would take the usage past the limit is refused in that write, so
//! concurrent pushes never end above the limit:
//! - `put_manifest` of a manifest new in its repository adds its charges, and fails with
//!   [`quota_exceeded`] when the digests new to the project would take the usage past the
//!   limit (nothing is written then);
//! - `delete_manifest` and `delete_repository` take the charges of each removed manifest
//!   back, and a digest whose count reaches zero leaves the usage.
//!
//! Uploads are checked too ([`crate::Registry`] asks [`QuotaStore::quota`] and
//! [`QuotaStore::counted`] before it publishes a blob): a blob that does not fit is not
//! stored. That check is advisory (two uploads may each fit alone); the manifest put is the
//! one that holds.

use async_trait::async_trait;

use crate::digest::Digest;
use crate::error::{ErrorCode, RegistryError, Result};
use crate::manifest::{Target, referenced_blobs};

/// A project's storage limit and usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quota {
    /// Bytes the project may hold; `None`: no limit.
    pub limit: Option<u64>,
    /// Bytes its artifacts hold.
    pub used: u64,
}

impl Quota {
    /// Whether `adding` more bytes stay within the limit.
    pub fn fits(&self, adding: u64) -> bool {
        self.limit
            .is_none_or(|limit| adding == 0 || self.used.saturating_add(adding) <= limit)
    }
}

/// Harbor's wire form of a limit: bytes, or -1 for none.
pub fn limit_from_harbor(value: i64) -> Result<Option<u64>> {
    match value {
        -1 => Ok(None),
        bytes if bytes >= 0 => Ok(Some(bytes.unsigned_abs())),
        other => Err(RegistryError::new(
            ErrorCode::BadRequest,
            format!("storage_limit must be -1 (no limit) or a number of bytes, not {other}"),
        )),
    }
}

/// Harbor's wire form of a limit: bytes, or -1 for none.
pub fn limit_to_harbor(limit: Option<u64>) -> i64 {
    limit.map_or(-1, |bytes| i64::try_from(bytes).unwrap_or(i64::MAX))
}

/// What a manifest charges its project: its own digest and size, and each distinct blob it
/// references.
pub fn charges(digest: &Digest, media_type: &str, bytes: &[u8]) -> Vec<Target> {
    charges_of(
        digest,
        bytes.len() as u64,
        &referenced_blobs(media_type, bytes),
    )
}

/// [`charges`] of a manifest of `size` bytes whose blobs (`referenced_blobs`) are read
/// already.
pub fn charges_of(digest: &Digest, size: u64, blobs: &[Target]) -> Vec<Target> {
    let own = Target {
        digest: digest.clone(),
        size,
    };
    std::iter::once(own)
        .chain(blobs.iter().filter(|blob| &blob.digest != digest).cloned())
        .collect()
}

/// What a refused push would have done to its project's usage.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Refusal {
    pub project: String,
    pub used: u64,
    pub adding: u64,
    pub limit: u64,
}

impl Refusal {
    /// The refusal an error carries, if it is one.
    pub fn of(error: &RegistryError) -> Option<&Self> {
        match error.hint() {
            Some(crate::error::ErrorHint::QuotaExceeded(refusal)) => Some(refusal),
            _ => None,
        }
    }
}

/// The refusal of a push that would take `project` past its limit: `403 DENIED`, naming
/// the usage, what the push adds, and the limit.
pub fn quota_exceeded(project: &str, quota: &Quota, adding: u64) -> RegistryError {
    let limit = quota.limit.unwrap_or(u64::MAX);
    let refusal = Refusal {
        project: project.to_owned(),
        used: quota.used,
        adding,
        limit,
    };
    RegistryError::new(
        ErrorCode::Denied,
        format!(
            "quota exceeded: project {project} uses {} of its {} storage limit, and this push \
             adds {}",
            bytes_text(quota.used),
            bytes_text(limit),
            bytes_text(adding),
        ),
    )
    .with_detail(serde_json::json!({
        "project": project,
        "used": quota.used,
        "adding": adding,
        "limit": limit,
    }))
    .with_hint(crate::error::ErrorHint::QuotaExceeded(Box::new(refusal)))
}

/// `1234567` as `1.2 MiB (1234567 bytes)`.
fn bytes_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {} ({bytes} bytes)", UNITS[unit])
}

/// Project storage limits and usage, kept by the metadata store (see the module
/// documentation for how its manifest writes keep them).
#[async_trait]
pub trait QuotaStore: Send + Sync + 'static {
    /// The project's limit and usage (no limit and nothing used for a project never seen).
    async fn quota(&self, project: &str) -> Result<Quota>;

    /// Sets or removes the project's limit. A limit below the usage is allowed: pushes that
    /// add bytes are refused until the usage is back under it.
    async fn set_limit(&self, project: &str, limit: Option<u64>) -> Result<()>;

    /// Whether each of `digests` is counted in the project's usage already, in order.
    async fn counted(&self, project: &str, digests: &[Digest]) -> Result<Vec<bool>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(byte: u8) -> Digest {
        Digest::of(crate::Algorithm::Sha256, &[byte])
    }

    #[test]
    fn a_quota_fits_up_to_its_limit() {
        let quota = Quota {
            limit: Some(100),
            used: 60,
        };
        assert!(quota.fits(40));
        assert!(!quota.fits(41));
        let over = Quota {
            limit: Some(10),
            used: 60,
        };
        assert!(over.fits(0), "a push that adds nothing always fits");
        assert!(Quota::default().fits(u64::MAX));
    }

    #[test]
    fn harbor_limits_round_trip() {
        assert_eq!(limit_from_harbor(-1).expect("valid"), None);
        assert_eq!(limit_from_harbor(0).expect("valid"), Some(0));
        assert_eq!(limit_to_harbor(Some(5)), 5);
        assert_eq!(limit_to_harbor(None), -1);
        assert!(limit_from_harbor(-2).is_err());
    }

    #[test]
    fn a_manifest_charges_itself_and_each_distinct_blob() {
        let (config, layer) = (digest(1), digest(2));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config, "size": 10},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": 20},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": 20},
            ],
        })
        .to_string();
        let own = Digest::of(crate::Algorithm::Sha256, manifest.as_bytes());
        let charged = charges(
            &own,
            "application/vnd.oci.image.manifest.v1+json",
            manifest.as_bytes(),
        );
        let sizes: Vec<(Digest, u64)> = charged.into_iter().map(|t| (t.digest, t.size)).collect();
        assert_eq!(
            sizes,
            vec![(own, manifest.len() as u64), (config, 10), (layer, 20)]
        );
    }

    #[test]
    fn the_refusal_names_usage_and_limit() {
        let error = quota_exceeded(
            "team",
            &Quota {
                limit: Some(10 * 1024 * 1024),
                used: 9 * 1024 * 1024,
            },
            2 * 1024 * 1024,
        );
        assert_eq!(error.code(), ErrorCode::Denied);
        let message = error.message();
        assert!(message.contains("9.0 MiB (9437184 bytes)"), "{message}");
        assert!(message.contains("10.0 MiB"), "{message}");
        assert!(message.contains("adds 2.0 MiB"), "{message}");
    }
}
