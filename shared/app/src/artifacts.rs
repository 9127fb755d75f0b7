//! The repository and artifact use cases of the management API: a project's repositories,
//! a repository's artifacts (manifests) with their tags, sizes and usage, tags added and
//! removed, and deletion of artifacts and whole repositories. Deletions are published as
//! the same events a deletion through the registry API publishes, and refused, as there,
//! where a project's tag immutability rules protect a tag.

use std::collections::{BTreeMap, HashMap, HashSet};

use berth_core::Tag;
use berth_core::manifest::{ManifestKind, parse_manifest};
use berth_core::ports::{ManifestRecord, all_manifests, all_tag_targets};
use berth_core::statistics::Usage;
use berth_core::{Digest, ErrorCode, EventKind, Reference, RegistryError, RepositoryName, Result};
use serde::Deserialize;

use crate::accounts::{Accounts, MAX_PAGE_SIZE};
use crate::permission::{Caller, bad_request, not_found};

/// How a listing's names are matched (Harbor's `q=name=value` and `q=name=~value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameMatch {
    Exact(String),
    /// The name contains the text.
    Contains(String),
}

impl NameMatch {
    fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(wanted) => name == wanted,
            Self::Contains(part) => name.contains(part.as_str()),
        }
    }
}

/// Which page of a listing, in Harbor's terms (pages count from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub page: usize,
    pub page_size: usize,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            page: 1,
            page_size: 10,
        }
    }
}

impl PageRequest {
    pub(crate) fn slice<T>(&self, mut items: Vec<T>) -> Vec<T> {
        let start = (self.page.max(1) - 1).saturating_mul(self.page_size);
        if start >= items.len() {
            return Vec::new();
        }
        items.drain(..start);
        items.truncate(self.page_size);
        items
    }
}

/// The order of a repository listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RepositoryOrder {
    #[default]
    Name,
    NameDescending,
    /// Least recently pushed first.
    UpdateTime,
    /// Most recently pushed first.
    UpdateTimeDescending,
}

/// What a repository listing asks for.
#[derive(Debug, Clone, Default)]
pub struct RepositoryQuery {
    /// Matched against the full name (`project/repository`).
    pub name: Option<NameMatch>,
    pub order: RepositoryOrder,
    pub page: PageRequest,
}

/// One repository as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositorySummary {
    pub name: RepositoryName,
    pub artifact_count: u64,
    pub usage: Usage,
}

/// A page of a listing and how many entries the whole listing has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub total: usize,
}

/// What an artifact listing asks for.
#[derive(Debug, Clone, Default)]
pub struct ArtifactQuery {
    /// Only artifacts with a tag that matches.
    pub tag: Option<NameMatch>,
    /// Only the artifact with this digest.
    pub digest: Option<String>,
    /// Most recently pushed first (one usage read per artifact); digest order otherwise.
    pub newest_first: bool,
    pub page: PageRequest,
}

/// Harbor's artifact types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactType {
    Image,
    Chart,
    Unknown,
}

impl ArtifactType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "IMAGE",
            Self::Chart => "CHART",
            Self::Unknown => "UNKNOWN",
        }
    }
}

/// A platform an index entry names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// A manifest an index refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactReference {
    pub digest: Digest,
    pub platform: Option<Platform>,
    pub annotations: BTreeMap<String, String>,
}

/// One artifact as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactView {
    pub repository: RepositoryName,
    pub digest: Digest,
    /// The manifest's media type.
    pub media_type: String,
    /// What the artifact is, as Harbor's `media_type` names it: the config's media type
    /// (or the manifest's `artifactType`) for an image manifest, the index's own media type
    /// for an index.
    pub artifact_media_type: String,
    pub artifact_type: ArtifactType,
    /// The manifest, its config and each distinct layer counted once; for an index, its
    /// own bytes, its manifests' and each distinct blob of theirs.
    pub size: u64,
    pub tags: Vec<String>,
    pub references: Vec<ArtifactReference>,
    pub annotations: BTreeMap<String, String>,
    pub usage: Usage,
}

const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
const IMAGE_CONFIGS: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

fn artifact_not_found(
    repository: &RepositoryName,
    reference: &impl std::fmt::Display,
) -> RegistryError {
    not_found(&format!("artifact {repository}@{reference}"))
}

impl Accounts {
    async fn repo_usage(&self, repository: &RepositoryName) -> Result<Usage> {
        match self.statistics_store() {
            Some(statistics) => statistics.repository_usage(repository).await,
            None => Ok(Usage::default()),
        }
    }

    async fn artifact_usage_of(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Result<Usage> {
        match self.statistics_store() {
            Some(statistics) => statistics.artifact_usage(repository, digest).await,
            None => Ok(Usage::default()),
        }
    }

    async fn all_manifests(&self, repository: &RepositoryName) -> Result<Vec<ManifestRecord>> {
        all_manifests(self.metadata.as_ref(), repository).await
    }

    async fn all_tags(&self, repository: &RepositoryName) -> Result<Vec<(String, Digest)>> {
        all_tag_targets(self.metadata.as_ref(), repository).await
    }

    /// The repository names of `project`, in lexical order.
    pub(crate) async fn project_repositories(&self, project: &str) -> Result<Vec<RepositoryName>> {
        let prefix = format!("{project}/");
        let mut names = Vec::new();
        let mut after = prefix.clone();
        loop {
            let page = self
                .metadata
                .repositories(Some(&after), MAX_PAGE_SIZE)
                .await?;
            let full = page.len() == MAX_PAGE_SIZE;
            for name in page {
                if !name.starts_with(&prefix) {
                    return Ok(names);
                }
                after.clone_from(&name);
                names.push(name.parse()?);
            }
            if !full {
                return Ok(names);
            }
        }
    }

    fn summary_of(name: RepositoryName, manifests: usize, usage: Usage) -> RepositorySummary {
        RepositorySummary {
            name,
            artifact_count: manifests as u64,
            usage,
        }
    }

    /// The repositories of `project` that `query` asks for (the edge has checked the caller
    /// may pull from the project).
    pub async fn repositories(
        &self,
        project: &str,
        query: &RepositoryQuery,
    ) -> Result<Listing<RepositorySummary>> {
        let mut names: Vec<RepositoryName> = self
            .project_repositories(project)
            .await?
            .into_iter()
            .filter(|name| {
                query
                    .name
                    .as_ref()
                    .is_none_or(|wanted| wanted.matches(name.as_str()))
            })
            .collect();
        let total = names.len();
        let by_time = matches!(
            query.order,
            RepositoryOrder::UpdateTime | RepositoryOrder::UpdateTimeDescending
        );
        let mut usages: HashMap<String, Usage> = HashMap::new();
        if by_time {
            for name in &names {
                usages.insert(name.to_string(), self.repo_usage(name).await?);
            }
            names.sort_by_key(|name| usages.get(name.as_str()).and_then(|u| u.push_ms));
        }
        if matches!(
            query.order,
            RepositoryOrder::NameDescending | RepositoryOrder::UpdateTimeDescending
        ) {
            names.reverse();
        }
        let mut items = Vec::new();
        for name in query.page.slice(names) {
            let usage = match usages.remove(name.as_str()) {
                Some(usage) => usage,
                None => self.repo_usage(&name).await?,
            };
            let count = self.all_manifests(&name).await?.len();
            items.push(Self::summary_of(name, count, usage));
        }
        Ok(Listing { items, total })
    }

    /// One repository.
    pub async fn repository(&self, repository: &RepositoryName) -> Result<RepositorySummary> {
        if !self.metadata.repository_exists(repository).await? {
            return Err(not_found(&format!("repository {repository}")));
        }
        let count = self.all_manifests(repository).await?.len();
        let usage = self.repo_usage(repository).await?;
        Ok(Self::summary_of(repository.clone(), count, usage))
    }

    /// Deletes the repository: each artifact (published as a manifest deletion), then what
    /// is left (tags, blob links).
    pub async fn delete_repository(
        &self,
        caller: &Caller,
        repository: &RepositoryName,
    ) -> Result<()> {
        if !self.metadata.repository_exists(repository).await? {
            return Err(not_found(&format!("repository {repository}")));
        }
        self.tag_guard().check_repository_delete(repository).await?;
        for record in self.all_manifests(repository).await? {
            if self
                .metadata
                .delete_manifest(repository, &record.digest)
                .await?
            {
                self.publish(
                    &caller.context,
                    EventKind::ManifestDeleted {
                        repository: repository.clone(),
                        digest: record.digest,
                    },
                );
            }
        }
        self.metadata.delete_repository(repository).await?;
        Ok(())
    }

    /// The artifacts of a repository that `query` asks for.
    pub async fn artifacts(
        &self,
        repository: &RepositoryName,
        query: &ArtifactQuery,
    ) -> Result<Listing<ArtifactView>> {
        if !self.metadata.repository_exists(repository).await? {
            return Err(not_found(&format!("repository {repository}")));
        }
        let manifests = self.all_manifests(repository).await?;
        let tags = tags_by_digest(self.all_tags(repository).await?);
        let mut chosen: Vec<ManifestRecord> = manifests
            .iter()
            .filter(|record| {
                query
                    .digest
                    .as_ref()
                    .is_none_or(|digest| record.digest.as_str() == digest)
            })
            .filter(|record| {
                query.tag.as_ref().is_none_or(|wanted| {
                    tags.get(record.digest.as_str())
                        .is_some_and(|names| names.iter().any(|name| wanted.matches(name)))
                })
            })
            .cloned()
            .collect();
        let total = chosen.len();
        let mut usages: HashMap<String, Usage> = HashMap::new();
        if query.newest_first {
            for record in &chosen {
                let usage = self.artifact_usage_of(repository, &record.digest).await?;
                usages.insert(record.digest.to_string(), usage);
            }
            chosen.sort_by_key(|record| {
                std::cmp::Reverse(usages.get(record.digest.as_str()).and_then(|u| u.push_ms))
            });
        }
        let by_digest: HashMap<&str, &ManifestRecord> =
            manifests.iter().map(|m| (m.digest.as_str(), m)).collect();
        let mut items = Vec::new();
        for record in query.page.slice(chosen) {
            let usage = match usages.remove(record.digest.as_str()) {
                Some(usage) => usage,
                None => self.artifact_usage_of(repository, &record.digest).await?,
            };
            let tags = tags
                .get(record.digest.as_str())
                .cloned()
                .unwrap_or_default();
            items.push(view(repository, &record, &by_digest, tags, usage));
        }
        Ok(Listing { items, total })
    }

    /// The manifest a tag or digest names.
    async fn resolve(
        &self,
        repository: &RepositoryName,
        reference: &Reference,
    ) -> Result<ManifestRecord> {
        let found = match reference {
            Reference::Tag(tag) => self.metadata.tagged_manifest(repository, tag).await?,
            Reference::Digest(digest) => self.metadata.manifest(repository, digest).await?,
        };
        found.ok_or_else(|| artifact_not_found(repository, reference))
    }

    /// One artifact, by tag or digest.
    pub async fn artifact(
        &self,
        repository: &RepositoryName,
        reference: &Reference,
    ) -> Result<ArtifactView> {
        let record = self.resolve(repository, reference).await?;
        let tags = tags_by_digest(self.all_tags(repository).await?)
            .remove(record.digest.as_str())
            .unwrap_or_default();
        let mut children = Vec::new();
        if let Ok(parsed) = parse_manifest(Some(&record.media_type), &record.bytes) {
            for child in &parsed.manifests {
                children.extend(self.metadata.manifest(repository, &child.digest).await?);
            }
        }
        let by_digest: HashMap<&str, &ManifestRecord> =
            children.iter().map(|m| (m.digest.as_str(), m)).collect();
        let usage = self.artifact_usage_of(repository, &record.digest).await?;
        Ok(view(repository, &record, &by_digest, tags, usage))
    }

    /// Deletes an artifact, by tag or digest: its manifest and every tag on it.
    pub async fn delete_artifact(
        &self,
        caller: &Caller,
        repository: &RepositoryName,
        reference: &Reference,
    ) -> Result<()> {
        let record = self.resolve(repository, reference).await?;
        self.tag_guard()
            .check_manifest_delete(repository, &record.digest)
            .await?;
        if !self
            .metadata
            .delete_manifest(repository, &record.digest)
            .await?
        {
            return Err(artifact_not_found(repository, reference));
        }
        self.publish(
            &caller.context,
            EventKind::ManifestDeleted {
                repository: repository.clone(),
                digest: record.digest,
            },
        );
        Ok(())
    }

    /// The tags on an artifact, in lexical order.
    pub async fn artifact_tags(
        &self,
        repository: &RepositoryName,
        reference: &Reference,
        page: PageRequest,
    ) -> Result<(Vec<String>, usize, Usage)> {
        let record = self.resolve(repository, reference).await?;
        let tags = tags_by_digest(self.all_tags(repository).await?)
            .remove(record.digest.as_str())
            .unwrap_or_default();
        let total = tags.len();
        let usage = self.artifact_usage_of(repository, &record.digest).await?;
        Ok((page.slice(tags), total, usage))
    }

    /// Puts a new tag on an existing artifact, published as a push by tag. A tag that
    /// exists already is a conflict: moving a tag is a push.
    pub async fn add_tag(
        &self,
        caller: &Caller,
        repository: &RepositoryName,
        reference: &Reference,
        tag: &str,
    ) -> Result<()> {
        let tag: Tag = tag
            .parse()
            .map_err(|_| bad_request(format!("{tag:?} is not a valid tag")))?;
        let record = self.resolve(repository, reference).await?;
        if self
            .metadata
            .tagged_manifest(repository, &tag)
            .await?
            .is_some()
        {
            return Err(RegistryError::new(
                ErrorCode::Conflict,
                format!("tag {tag} already exists in {repository}"),
            ));
        }
        self.metadata
            .put_manifest(repository, &record, Some(&tag))
            .await?;
        self.publish(
            &caller.context,
            EventKind::ManifestPushed {
                repository: repository.clone(),
                digest: record.digest.clone(),
                tag: Some(tag),
                media_type: record.media_type.clone(),
                size: record.bytes.len() as u64,
            },
        );
        Ok(())
    }

    /// Removes a tag from an artifact; the artifact stays.
    pub async fn delete_artifact_tag(
        &self,
        caller: &Caller,
        repository: &RepositoryName,
        reference: &Reference,
        tag: &str,
    ) -> Result<()> {
        let missing = || not_found(&format!("tag {tag} of {repository}@{reference}"));
        let tag: Tag = tag.parse().map_err(|_| missing())?;
        let record = self.resolve(repository, reference).await?;
        let target = self.metadata.tagged_manifest(repository, &tag).await?;
        if target.is_none_or(|target| target.digest != record.digest) {
            return Err(missing());
        }
        self.tag_guard().check_tag_delete(repository, &tag).await?;
        if !self.metadata.delete_tag(repository, &tag).await? {
            return Err(missing());
        }
        self.publish(
            &caller.context,
            EventKind::TagDeleted {
                repository: repository.clone(),
                tag,
            },
        );
        Ok(())
    }
}

fn tags_by_digest(tags: Vec<(String, Digest)>) -> HashMap<String, Vec<String>> {
    let mut by_digest: HashMap<String, Vec<String>> = HashMap::new();
    for (tag, digest) in tags {
        by_digest.entry(digest.to_string()).or_default().push(tag);
    }
    by_digest
}

#[derive(Deserialize)]
struct IndexEntries {
    #[serde(default)]
    manifests: Vec<IndexEntry>,
}

#[derive(Deserialize)]
struct IndexEntry {
    digest: String,
    platform: Option<Platform>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// The artifact view of `record`; `known` holds the repository's manifests an index may
/// refer to.
fn view(
    repository: &RepositoryName,
    record: &ManifestRecord,
    known: &HashMap<&str, &ManifestRecord>,
    tags: Vec<String>,
    usage: Usage,
) -> ArtifactView {
    let parsed = parse_manifest(Some(&record.media_type), &record.bytes).ok();
    let mut artifact_media_type = record.media_type.clone();
    let (artifact_type, size, references, annotations) = match parsed {
        None => (
            ArtifactType::Unknown,
            record.bytes.len() as u64,
            Vec::new(),
            BTreeMap::new(),
        ),
        Some(parsed) if parsed.kind == ManifestKind::Image => {
            let artifact_type = match parsed.artifact_type.as_deref() {
                Some(HELM_CONFIG) => ArtifactType::Chart,
                Some(t) if IMAGE_CONFIGS.contains(&t) => ArtifactType::Image,
                _ => ArtifactType::Unknown,
            };
            if let Some(media_type) = &parsed.artifact_type {
                artifact_media_type.clone_from(media_type);
            }
            let mut seen = HashSet::new();
            let blobs: u64 = parsed
                .blobs
                .iter()
                .filter(|blob| seen.insert(blob.digest.clone()))
                .map(|blob| blob.size)
                .sum();
            (
                artifact_type,
                record.bytes.len() as u64 + blobs,
                Vec::new(),
                parsed.annotations,
            )
        }
        Some(parsed) => {
            let entries: Vec<IndexEntry> = serde_json::from_slice::<IndexEntries>(&record.bytes)
                .map(|index| index.manifests)
                .unwrap_or_default();
            let mut seen = HashSet::new();
            let mut size = record.bytes.len() as u64;
            let mut references = Vec::new();
            for entry in entries {
                let Ok(digest) = entry.digest.parse::<Digest>() else {
                    continue;
                };
                if let Some(child) = known.get(digest.as_str())
                    && seen.insert(child.digest.clone())
                {
                    size += child.bytes.len() as u64;
                    if let Ok(parsed) = parse_manifest(Some(&child.media_type), &child.bytes) {
                        size += parsed
                            .blobs
                            .iter()
                            .filter(|blob| seen.insert(blob.digest.clone()))
                            .map(|blob| blob.size)
                            .sum::<u64>();
                    }
                }
                references.push(ArtifactReference {
                    digest,
                    platform: entry.platform,
                    annotations: entry.annotations,
                });
            }
            (ArtifactType::Image, size, references, parsed.annotations)
        }
    };
    ArtifactView {
        repository: repository.clone(),
        digest: record.digest.clone(),
        media_type: record.media_type.clone(),
        artifact_media_type,
        artifact_type,
        size,
        tags,
        references,
        annotations,
        usage,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn digest_of(text: &str) -> Digest {
        Digest::of(berth_core::digest::Algorithm::Sha256, text.as_bytes())
    }

    fn record(media_type: &str, json: String) -> ManifestRecord {
        ManifestRecord {
            digest: digest_of(&json),
            media_type: media_type.to_owned(),
            bytes: Bytes::from(json),
            referrer: None,
        }
    }

    fn image(config: &str, layers: &[(&str, u64)]) -> ManifestRecord {
        let layers: Vec<String> = layers
            .iter()
            .map(|(seed, size)| {
                format!(
                    r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{size}}}"#,
                    digest_of(seed)
                )
            })
            .collect();
        record(
            "application/vnd.oci.image.manifest.v1+json",
            format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"{config}","digest":"{}","size":7}},"layers":[{}]}}"#,
                digest_of(config),
                layers.join(",")
            ),
        )
    }

    fn repository() -> RepositoryName {
        "team/app".parse().expect("a valid name")
    }

    #[test]
    fn an_image_counts_its_manifest_config_and_each_distinct_layer_once() {
        let manifest = image(IMAGE_CONFIGS[0], &[("a", 100), ("b", 20), ("a", 100)]);
        let shown = view(
            &repository(),
            &manifest,
            &HashMap::new(),
            Vec::new(),
            Usage::default(),
        );
        assert_eq!(shown.size, manifest.bytes.len() as u64 + 7 + 100 + 20);
        assert_eq!(shown.artifact_type, ArtifactType::Image);
        assert_eq!(shown.artifact_media_type, IMAGE_CONFIGS[0]);
        let chart = image(HELM_CONFIG, &[("chart", 5)]);
        let shown = view(
            &repository(),
            &chart,
            &HashMap::new(),
            Vec::new(),
            Usage::default(),
        );
        assert_eq!(shown.artifact_type, ArtifactType::Chart);
    }

    #[test]
    fn an_index_counts_its_manifests_and_their_distinct_blobs_and_names_their_platforms() {
        let amd = image(IMAGE_CONFIGS[0], &[("base", 1000), ("amd", 30)]);
        let arm = image(IMAGE_CONFIGS[0], &[("base", 1000), ("arm", 40)]);
        let entry = |child: &ManifestRecord, arch: &str| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"platform":{{"os":"linux","architecture":"{arch}"}}}}"#,
                child.digest,
                child.bytes.len()
            )
        };
        let index = record(
            "application/vnd.oci.image.index.v1+json",
            format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{},{}]}}"#,
                entry(&amd, "amd64"),
                entry(&arm, "arm64")
            ),
        );
        let known: HashMap<&str, &ManifestRecord> =
            [(amd.digest.as_str(), &amd), (arm.digest.as_str(), &arm)].into();
        let shown = view(
            &repository(),
            &index,
            &known,
            vec!["v1".into()],
            Usage::default(),
        );
        // Both images share one config (same seed) and the base layer: each counted once.
        let expected = index.bytes.len() + amd.bytes.len() + arm.bytes.len();
        assert_eq!(shown.size, expected as u64 + 7 + 1000 + 30 + 40);
        assert_eq!(shown.artifact_type, ArtifactType::Image);
        let platforms: Vec<(&Digest, &str)> = shown
            .references
            .iter()
            .map(|r| {
                (
                    &r.digest,
                    r.platform.as_ref().map_or("", |p| p.architecture.as_str()),
                )
            })
            .collect();
        assert_eq!(platforms, [(&amd.digest, "amd64"), (&arm.digest, "arm64")]);
    }

    #[test]
    fn pages_count_from_one() {
        let page = |page, page_size| PageRequest { page, page_size };
        assert_eq!(page(1, 2).slice(vec![1, 2, 3]), [1, 2]);
        assert_eq!(page(2, 2).slice(vec![1, 2, 3]), [3]);
        assert!(page(3, 2).slice(vec![1, 2, 3]).is_empty());
    }
}
