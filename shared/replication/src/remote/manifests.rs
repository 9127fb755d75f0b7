//! Manifests on a remote registry: reading them verified against their digests, storing
//! and deleting them.

use berth_core::{Algorithm, Reference, RepositoryName};
use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde::Deserialize;

use super::auth::{delete_scopes, pull_scopes, push_scopes};
use super::error::{RemoteError, mismatch};
use super::request::Call;
use super::response::{answered_digest, read_body};
use super::{Digest, OCTET_STREAM, RemoteRegistry, manifest_reference, repository};

/// The largest manifest accepted, as Distribution and Berth limit them.
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// A manifest as the remote registry stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

impl RemoteRegistry {
    /// A manifest's digest and media type, `None` when there is no such manifest.
    pub async fn manifest_head(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<(Digest, String)>, RemoteError> {
        let repo = repository(repo)?;
        let parsed = manifest_reference(reference)?;
        let url = self.endpoint(&format!("/v2/{repo}/manifests/{parsed}"));
        let call =
            Call::new(Method::HEAD, url, pull_scopes(&repo)).header(ACCEPT, manifest_accept());
        let describe = call.describe();
        let response = self.follow(call).await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(self.failure(&describe, response).await),
        }
        let media_type = media_type_header(response.headers());
        match (answered_digest(response.headers(), &describe)?, media_type) {
            (Some(digest), Some(media_type)) => Ok(Some((digest, media_type))),
            // Some registries leave the digest out of HEAD answers: the content tells.
            _ => Ok(self
                .manifest(repo.as_str(), reference)
                .await?
                .map(|manifest| (manifest.digest, manifest.media_type))),
        }
    }

    /// A manifest's bytes, verified against the digest it was asked by and the one the
    /// registry announced; `None` when there is no such manifest.
    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<RemoteManifest>, RemoteError> {
        let repo = repository(repo)?;
        let reference = manifest_reference(reference)?;
        let url = self.endpoint(&format!("/v2/{repo}/manifests/{reference}"));
        let call =
            Call::new(Method::GET, url, pull_scopes(&repo)).header(ACCEPT, manifest_accept());
        let describe = call.describe();
        let response = self.follow(call).await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(self.failure(&describe, response).await),
        }
        let announced = answered_digest(response.headers(), &describe)?;
        let content_type = media_type_header(response.headers());
        let bytes = read_body(response, MAX_MANIFEST_BYTES, &describe).await?;
        let what = manifest_name(&repo, &reference);
        let digest = verify_manifest(&what, &reference, announced.as_ref(), &bytes)?;
        let media_type = content_type
            .filter(|t| t != "application/json" && t != OCTET_STREAM)
            .or_else(|| media_type_field(&bytes))
            .ok_or_else(|| {
                RemoteError::Protocol(format!(
                    "{describe}: the registry answered a manifest without a media type"
                ))
            })?;
        Ok(Some(RemoteManifest {
            digest,
            media_type,
            bytes,
        }))
    }

    /// Stores a manifest under a tag or its digest; returns its digest.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Digest, RemoteError> {
        let repo = repository(repo)?;
        let reference = manifest_reference(reference)?;
        let content_type = HeaderValue::from_str(media_type).map_err(|_| {
            RemoteError::Invalid(format!("invalid manifest media type {media_type:?}"))
        })?;
        let url = self.endpoint(&format!("/v2/{repo}/manifests/{reference}"));
        let expected = match &reference {
            Reference::Digest(digest) => Digest::of(digest.algorithm(), &bytes),
            Reference::Tag(_) => Digest::of(Algorithm::Sha256, &bytes),
        };
        let what = manifest_name(&repo, &reference);
        if let Reference::Digest(asked) = &reference
            && *asked != expected
        {
            return Err(mismatch(&what, asked, &expected));
        }
        let call = Call::new(Method::PUT, url, push_scopes(&repo)).bytes(content_type, bytes);
        let describe = call.describe();
        let response = self.execute(call).await?;
        if !response.status().is_success() {
            return Err(self.failure(&describe, response).await);
        }
        match answered_digest(response.headers(), &describe)? {
            Some(answered) if answered.algorithm() == expected.algorithm() => {
                if answered != expected {
                    return Err(mismatch(&what, &expected, &answered));
                }
                Ok(answered)
            }
            _ => Ok(expected),
        }
    }

    /// Deletes a manifest; `false` when there was none.
    pub async fn delete_manifest(&self, repo: &str, reference: &str) -> Result<bool, RemoteError> {
        let repo = repository(repo)?;
        let reference = manifest_reference(reference)?;
        let url = self.endpoint(&format!("/v2/{repo}/manifests/{reference}"));
        let call = Call::new(Method::DELETE, url, delete_scopes(&repo));
        let describe = call.describe();
        let response = self.execute(call).await?;
        match response.status() {
            status if status.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.failure(&describe, response).await),
        }
    }
}

/// Every manifest and index media type replication copies, for `Accept`: without them a
/// registry may answer an older format or refuse.
fn manifest_accept() -> HeaderValue {
    HeaderValue::from_static(
        "application/vnd.oci.image.manifest.v1+json, \
         application/vnd.oci.image.index.v1+json, \
         application/vnd.docker.distribution.manifest.v2+json, \
         application/vnd.docker.distribution.manifest.list.v2+json, \
         application/vnd.docker.distribution.manifest.v1+prettyjws, \
         application/vnd.docker.distribution.manifest.v1+json",
    )
}

/// `repo:tag` or `repo@digest`, as people write them.
fn manifest_name(repo: &RepositoryName, reference: &Reference) -> String {
    match reference {
        Reference::Tag(tag) => format!("manifest {repo}:{tag}"),
        Reference::Digest(digest) => format!("manifest {repo}@{digest}"),
    }
}

/// Checks manifest bytes against the digest they were asked by and the one the registry
/// announced; returns the manifest's digest.
fn verify_manifest(
    what: &str,
    reference: &Reference,
    announced: Option<&Digest>,
    bytes: &[u8],
) -> Result<Digest, RemoteError> {
    let mut digest = None;
    if let Reference::Digest(asked) = reference {
        let actual = Digest::of(asked.algorithm(), bytes);
        if actual != *asked {
            return Err(mismatch(what, asked, &actual));
        }
        digest = Some(actual);
    }
    if let Some(announced) = announced {
        let actual = Digest::of(announced.algorithm(), bytes);
        if actual != *announced {
            return Err(mismatch(
                &format!("{what} (the digest the registry announced)"),
                announced,
                &actual,
            ));
        }
        digest = digest.or(Some(actual));
    }
    Ok(digest.unwrap_or_else(|| Digest::of(Algorithm::Sha256, bytes)))
}

/// The `mediaType` field of a manifest, for registries that answer no `Content-Type`.
fn media_type_field(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Typed {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<Typed>(bytes).ok()?.media_type
}

/// The `Content-Type` without parameters, if there is one.
fn media_type_header(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let media_type = value.split(';').next().unwrap_or_default().trim();
    (!media_type.is_empty()).then(|| media_type.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_verification() {
        let bytes = br#"{"schemaVersion":2}"#;
        let digest = Digest::of(Algorithm::Sha256, bytes);
        let tag = manifest_reference("latest").expect("a tag");
        let by_digest = manifest_reference(digest.as_str()).expect("a digest");
        assert_eq!(verify_manifest("m", &tag, None, bytes).expect("ok"), digest);
        assert_eq!(
            verify_manifest("m", &by_digest, Some(&digest), bytes).expect("ok"),
            digest
        );
        let other = Digest::of(Algorithm::Sha256, b"other");
        let error = verify_manifest("m", &tag, Some(&other), bytes).expect_err("a mismatch");
        assert!(
            matches!(error, RemoteError::DigestMismatch { .. }),
            "{error}"
        );
        let asked = manifest_reference(other.as_str()).expect("a digest");
        assert!(verify_manifest("m", &asked, None, bytes).is_err());
        let sha512 = Digest::of(Algorithm::Sha512, bytes);
        assert_eq!(
            verify_manifest("m", &tag, Some(&sha512), bytes).expect("ok"),
            sha512
        );
    }
}
