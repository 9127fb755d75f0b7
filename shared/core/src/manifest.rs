//! Manifest media types and validation of pushed manifests.
//!
//! The raw bytes a client sends are what Berth stores and hashes; parsing here only
//! validates them and extracts the references a registry must check.

use std::collections::BTreeMap;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{ErrorCode, RegistryError, Result};

/// Largest manifest Berth accepts, as the distribution spec suggests.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

pub mod media_type {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
}

/// Whether a manifest lists blobs (an image) or other manifests (an index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    Image,
    Index,
}

impl ManifestKind {
    fn of(media_type: &str) -> Option<Self> {
        match media_type {
            media_type::OCI_MANIFEST | media_type::DOCKER_MANIFEST => Some(Self::Image),
            media_type::OCI_INDEX | media_type::DOCKER_MANIFEST_LIST => Some(Self::Index),
            _ => None,
        }
    }
}

/// A descriptor's target as the registry must check it: digest and declared size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub digest: Digest,
    pub size: u64,
}

/// What Berth learns from a valid manifest.
#[derive(Debug, Clone)]
pub struct ParsedManifest {
    pub media_type: String,
    pub kind: ManifestKind,
    /// Config and layers that must already be in the repository (non-distributable layers
    /// excluded).
    pub blobs: Vec<Target>,
    /// Child manifests of an index, which must already be in the repository.
    pub manifests: Vec<Target>,
    pub subject: Option<Digest>,
    /// The artifact type a referrers listing reports: `artifactType`, else the config's
    /// media type for an image manifest.
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

/// The referrers API's view of a manifest that names a subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferrerDescriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub annotations: BTreeMap<String, String>,
}

fn invalid(message: impl Into<String>) -> RegistryError {
    RegistryError::new(ErrorCode::ManifestInvalid, message.into())
}

/// The media type part of a `Content-Type` value, without parameters.
fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<u32>,
    media_type: Option<String>,
}

/// Validates a pushed manifest. `content_type` is the request's `Content-Type`, if any.
pub fn parse_manifest(content_type: Option<&str>, bytes: &[u8]) -> Result<ParsedManifest> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(RegistryError::new(
            ErrorCode::PayloadTooLarge,
            format!("manifest is larger than the {MAX_MANIFEST_BYTES} byte limit"),
        ));
    }
    let probe: Probe = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("manifest is not a valid JSON object: {e}")))?;
    let header = content_type
        .map(essence)
        .filter(|t| !matches!(*t, "" | "application/json" | "application/octet-stream"));
    let schema1 = [
        media_type::DOCKER_SCHEMA1,
        media_type::DOCKER_SCHEMA1_SIGNED,
    ];
    if probe.schema_version == Some(1)
        || header.is_some_and(|t| schema1.contains(&t))
        || probe
            .media_type
            .as_deref()
            .is_some_and(|t| schema1.contains(&t))
    {
        return Err(invalid(
            "Docker schema 1 manifests are not supported: push with Docker schema 2 or OCI",
        ));
    }
    if probe.schema_version != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }
    let media_type = match (header, probe.media_type.as_deref()) {
        (Some(header), Some(body)) if header != body => {
            return Err(invalid(format!(
                "Content-Type {header} does not match the manifest's mediaType {body}"
            )));
        }
        (Some(media_type), _) | (None, Some(media_type)) => media_type.to_owned(),
        (None, None) => {
            return Err(invalid(
                "the manifest media type is unknown: send it as Content-Type or mediaType",
            ));
        }
    };
    let kind = ManifestKind::of(&media_type)
        .ok_or_else(|| invalid(format!("unsupported manifest media type {media_type}")))?;
    match kind {
        ManifestKind::Image => parse_image(media_type, bytes),
        ManifestKind::Index => parse_index(media_type, bytes),
    }
}

/// The distinct blobs (config and layers) a stored manifest references, as the blob index
/// counts them: none for an index, or for bytes that do not parse.
pub fn referenced_blobs(media_type: &str, bytes: &[u8]) -> Vec<Target> {
    let Ok(parsed) = parse_manifest(Some(media_type), bytes) else {
        return Vec::new();
    };
    let mut seen = std::collections::HashSet::new();
    parsed
        .blobs
        .into_iter()
        .filter(|blob| seen.insert(blob.digest.clone()))
        .collect()
}

fn target(descriptor: &Descriptor) -> Result<Target> {
    let digest = descriptor.digest().to_string().parse()?;
    Ok(Target {
        digest,
        size: descriptor.size(),
    })
}

/// Layers whose bytes are distributed elsewhere need not be pushed before the manifest.
fn is_non_distributable(media_type: &str) -> bool {
    media_type.contains(".nondistributable.") || media_type.contains(".foreign.")
}

fn parse_image(media_type: String, bytes: &[u8]) -> Result<ParsedManifest> {
    let manifest: ImageManifest = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("invalid image manifest: {e}")))?;
    let mut blobs = vec![target(manifest.config())?];
    for layer in manifest.layers() {
        if !is_non_distributable(layer.media_type().as_ref()) {
            blobs.push(target(layer)?);
        }
    }
    let artifact_type = manifest
        .artifact_type()
        .as_ref()
        .unwrap_or(manifest.config().media_type())
        .to_string();
    Ok(ParsedManifest {
        media_type,
        kind: ManifestKind::Image,
        blobs,
        manifests: Vec::new(),
        subject: manifest
            .subject()
            .as_ref()
            .map(target)
            .transpose()?
            .map(|t| t.digest),
        artifact_type: Some(artifact_type),
        annotations: manifest
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
    })
}

fn parse_index(media_type: String, bytes: &[u8]) -> Result<ParsedManifest> {
    let index: ImageIndex =
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("invalid image index: {e}")))?;
    let manifests = index
        .manifests()
        .iter()
        .map(target)
        .collect::<Result<_>>()?;
    Ok(ParsedManifest {
        media_type,
        kind: ManifestKind::Index,
        blobs: Vec::new(),
        manifests,
        subject: index
            .subject()
            .as_ref()
            .map(target)
            .transpose()?
            .map(|t| t.digest),
        artifact_type: index.artifact_type().as_ref().map(ToString::to_string),
        annotations: index
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn image(media: &str) -> serde_json::Value {
        json!({
            "schemaVersion": 2,
            "mediaType": media,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest('a'), "size": 10},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest('b'), "size": 20},
                {"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", "digest": digest('c'), "size": 30}
            ]
        })
    }

    fn bytes(value: &serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(value).unwrap()
    }

    #[test]
    fn image_manifest_lists_config_and_distributable_layers() {
        let parsed = parse_manifest(
            Some(media_type::OCI_MANIFEST),
            &bytes(&image(media_type::OCI_MANIFEST)),
        )
        .unwrap();
        assert_eq!(parsed.kind, ManifestKind::Image);
        let digests: Vec<_> = parsed.blobs.iter().map(|t| t.digest.to_string()).collect();
        assert_eq!(digests, [digest('a'), digest('b')]);
        assert_eq!(
            parsed.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn docker_schema2_and_content_type_with_parameters() {
        let body = bytes(&image(media_type::DOCKER_MANIFEST));
        let ct = format!("{}; charset=utf-8", media_type::DOCKER_MANIFEST);
        let parsed = parse_manifest(Some(&ct), &body).unwrap();
        assert_eq!(parsed.media_type, media_type::DOCKER_MANIFEST);
    }

    #[test]
    fn media_type_comes_from_the_body_when_the_header_is_generic() {
        let body = bytes(&image(media_type::OCI_MANIFEST));
        let parsed = parse_manifest(Some("application/json"), &body).unwrap();
        assert_eq!(parsed.media_type, media_type::OCI_MANIFEST);
    }

    #[test]
    fn index_lists_children_and_subject() {
        let body = bytes(&json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_INDEX,
            "artifactType": "application/example",
            "manifests": [
                {"mediaType": media_type::OCI_MANIFEST, "digest": digest('d'), "size": 5,
                 "platform": {"architecture": "amd64", "os": "linux"}}
            ],
            "subject": {"mediaType": media_type::OCI_MANIFEST, "digest": digest('e'), "size": 7}
        }));
        let parsed = parse_manifest(None, &body).unwrap();
        assert_eq!(parsed.kind, ManifestKind::Index);
        assert_eq!(parsed.manifests[0].digest.to_string(), digest('d'));
        assert_eq!(parsed.subject.unwrap().to_string(), digest('e'));
        assert_eq!(parsed.artifact_type.as_deref(), Some("application/example"));
    }

    #[test]
    fn refusals() {
        let oci = bytes(&image(media_type::OCI_MANIFEST));
        let cases: Vec<(Option<&str>, Vec<u8>, ErrorCode)> = vec![
            (
                Some(media_type::OCI_MANIFEST),
                b"{not json".to_vec(),
                ErrorCode::ManifestInvalid,
            ),
            (
                Some(media_type::OCI_MANIFEST),
                b"[]".to_vec(),
                ErrorCode::ManifestInvalid,
            ),
            (
                Some(media_type::DOCKER_MANIFEST),
                oci.clone(),
                ErrorCode::ManifestInvalid,
            ),
            (Some("text/plain"), oci.clone(), ErrorCode::ManifestInvalid),
            (
                None,
                bytes(&json!({"schemaVersion": 2})),
                ErrorCode::ManifestInvalid,
            ),
            (
                Some(media_type::DOCKER_SCHEMA1_SIGNED),
                bytes(&json!({"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []})),
                ErrorCode::ManifestInvalid,
            ),
            (
                Some(media_type::OCI_MANIFEST),
                bytes(
                    &json!({"schemaVersion": 2, "mediaType": media_type::OCI_MANIFEST, "layers": []}),
                ),
                ErrorCode::ManifestInvalid,
            ),
            (
                Some(media_type::OCI_MANIFEST),
                bytes(
                    &json!({"schemaVersion": 2, "mediaType": media_type::OCI_MANIFEST,
                    "config": {"mediaType": "x", "digest": "sha256:abc", "size": 1}, "layers": []}),
                ),
                ErrorCode::ManifestInvalid,
            ),
            (
                Some(media_type::OCI_MANIFEST),
                vec![b' '; MAX_MANIFEST_BYTES + 1],
                ErrorCode::PayloadTooLarge,
            ),
        ];
        for (i, (content_type, body, code)) in cases.into_iter().enumerate() {
            let err = parse_manifest(content_type, &body).unwrap_err();
            assert_eq!(err.code(), code, "case {i}: {err}");
        }
    }

    #[test]
    fn schema1_refusal_names_the_alternative() {
        let body = bytes(&json!({"schemaVersion": 1, "fsLayers": []}));
        let err = parse_manifest(None, &body).unwrap_err();
        assert!(err.message().contains("schema 1"), "{err}");
    }
}
