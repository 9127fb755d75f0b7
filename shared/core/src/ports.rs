//! The storage ports the registry is written against. Adapters implement them; every adapter
//! runs the same conformance suite (`berth_core::conformance`).

use std::io;
use std::ops::Range;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use serde::{Deserialize, Serialize};

use crate::digest::{Digest, SavedHash};
use crate::error::Result;
use crate::manifest::ReferrerDescriptor;
use crate::names::{RepositoryName, Tag, UploadId};

/// A stream of body bytes, in either direction.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Content-addressed blob bytes and the staging area uploads are written to.
///
/// The store never decides whether bytes are valid: the registry hashes everything that
/// passes through and only commits what matched its digest.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Size of the blob stored under `digest`, or `None` if there is none.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>>;

    /// The blob's bytes, or only `range` of them (already checked against the size).
    /// A missing blob fails this call with `BLOB_UNKNOWN`, not a later stream item.
    async fn read(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<ByteStream>;

    /// A URL the client may fetch the blob from directly (for example a presigned S3 URL),
    /// or `None` when bytes must be streamed by the registry.
    async fn redirect_url(&self, digest: &Digest) -> Result<Option<String>>;

    /// Removes the blob's bytes. Removing a missing blob is not an error.
    async fn delete(&self, digest: &Digest) -> Result<()>;

    /// Prepares staging for a new upload and returns the backend's initial state.
    async fn begin_upload(&self, id: &UploadId) -> Result<Vec<u8>>;

    /// Appends `body` to the staged bytes, which are `staged.size` long. Anything beyond
    /// `staged.size` left by an interrupted earlier append is discarded first. Returns the
    /// number of bytes appended and the backend's new state; the appended bytes are durable
    /// when it returns.
    ///
    /// On error, or when the future is dropped, nothing the caller relies on has changed:
    /// the upload is still `staged.size` long and the next call works. A body stream error
    /// is `BLOB_UPLOAD_INVALID`; an unknown upload is `BLOB_UPLOAD_UNKNOWN`.
    ///
    /// Within one process the registry never runs two appends on one upload at once.
    /// Across processes, an append whose session update then loses the race must not have
    /// disturbed the bytes of the append that won (for example by writing each attempt to
    /// its own object).
    async fn append(&self, staged: &StagedUpload, body: ByteStream) -> Result<(u64, Vec<u8>)>;

    /// The first `staged.size` staged bytes, from the start.
    async fn read_staged(&self, staged: &StagedUpload) -> Result<ByteStream>;

    /// Publishes the first `staged.size` staged bytes under `digest`, durably and
    /// atomically: the blob is either absent or complete. If the blob already exists, the
    /// staged copy is dropped.
    async fn commit(&self, staged: &StagedUpload, digest: &Digest) -> Result<()>;

    /// Drops the staged bytes. Dropping an unknown upload is not an error.
    async fn abort(&self, staged: &StagedUpload) -> Result<()>;
}

/// An upload's staged state as the blob store sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedUpload {
    pub id: UploadId,
    /// Bytes received and acknowledged so far.
    pub size: u64,
    /// Opaque state owned by the blob store (for example S3 multipart progress).
    #[serde(default)]
    pub backend: Vec<u8>,
}

/// An upload session as the metadata store keeps it between requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadSession {
    pub repository: RepositoryName,
    pub staged: StagedUpload,
    /// The running hash of the staged bytes.
    pub hash: SavedHash,
    /// Unix seconds at creation, for expiry of abandoned sessions.
    pub started_at: u64,
}

/// A stored manifest: the exact bytes received, with what is needed to serve them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRecord {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
    /// Present when the manifest names a subject: its entry in the subject's referrers.
    pub referrer: Option<(Digest, ReferrerDescriptor)>,
}

/// Registry metadata: repositories, manifests, tags, blob links, referrers, upload sessions.
///
/// A repository exists once anything (a blob link or a manifest) was stored in it, and stays.
/// Listings order keys byte-wise; `after` is an exclusive bound that need not exist.
#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// The manifest `digest` in `repository`.
    async fn manifest(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<ManifestRecord>>;

    /// The manifest `tag` points at, in one read.
    async fn tagged_manifest(
        &self,
        repository: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<ManifestRecord>>;

    /// For each digest, whether the manifest is stored in `repository`.
    async fn manifests_present(
        &self,
        repository: &RepositoryName,
        digests: &[Digest],
    ) -> Result<Vec<bool>>;

    /// Stores a manifest, points `tag` at it when given, and records its referrer entry, all
    /// at once. Storing an existing manifest again is not an error (the last write wins).
    async fn put_manifest(
        &self,
        repository: &RepositoryName,
        manifest: &ManifestRecord,
        tag: Option<&Tag>,
    ) -> Result<()>;

    /// Removes a manifest, every tag pointing at it and its referrer entry. Returns whether
    /// it existed.
    async fn delete_manifest(&self, repository: &RepositoryName, digest: &Digest) -> Result<bool>;

    /// Removes one tag, leaving the manifest. Returns whether the tag existed.
    async fn delete_tag(&self, repository: &RepositoryName, tag: &Tag) -> Result<bool>;

    /// Up to `limit` tags in lexical order, starting after `after`.
    async fn tags(
        &self,
        repository: &RepositoryName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>>;

    /// Up to `limit` tags in lexical order, starting after `after`, each with the digest of
    /// the manifest it points at.
    async fn tag_targets(
        &self,
        repository: &RepositoryName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Digest)>>;

    /// Up to `limit` of the repository's manifests in digest order (byte-wise), starting
    /// after the digest `after`.
    async fn manifests_page(
        &self,
        repository: &RepositoryName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ManifestRecord>>;

    /// Up to `limit` repository names in lexical order, starting after `after`.
    async fn repositories(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>>;

    /// Removes the repository and everything stored in it: tags, manifests, referrer
    /// entries and blob links. Returns whether it existed. Not atomic over a large
    /// repository, but safe to repeat: a repository half removed is removed by the next call.
    async fn delete_repository(&self, repository: &RepositoryName) -> Result<bool>;

    /// Whether the repository exists.
    async fn repository_exists(&self, repository: &RepositoryName) -> Result<bool>;

    /// The manifests in `repository` that name `subject`, in digest order.
    async fn referrers(
        &self,
        repository: &RepositoryName,
        subject: &Digest,
    ) -> Result<Vec<ReferrerDescriptor>>;

    /// Records that `repository` may serve blob `digest` of `size` bytes.
    async fn link_blob(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        size: u64,
    ) -> Result<()>;

    /// For each digest, the size of the blob if `repository` links it.
    async fn blob_links(
        &self,
        repository: &RepositoryName,
        digests: &[Digest],
    ) -> Result<Vec<Option<u64>>>;

    /// Removes a blob link. Returns whether it existed.
    async fn unlink_blob(&self, repository: &RepositoryName, digest: &Digest) -> Result<bool>;

    /// Creates a new upload session (an existing id is overwritten; ids are random UUIDs).
    async fn create_upload(&self, session: &UploadSession) -> Result<()>;

    /// The upload session `id`.
    async fn upload(&self, id: &UploadId) -> Result<Option<UploadSession>>;

    /// Replaces the session only if its stored size is still `expected_size`; returns
    /// whether it was replaced (a missing session is `false`, and nothing is created). This
    /// is what makes racing chunk writes safe.
    async fn update_upload(&self, session: &UploadSession, expected_size: u64) -> Result<bool>;

    /// Removes the session. Removing an unknown session is not an error.
    async fn delete_upload(&self, id: &UploadId) -> Result<()>;
}

/// Entries a whole-listing read asks for a page at a time.
const LISTING_PAGE: usize = 100;

/// Every manifest of `repository`, in digest order, read page by page.
pub async fn all_manifests(
    meta: &dyn MetadataStore,
    repository: &RepositoryName,
) -> Result<Vec<ManifestRecord>> {
    let mut all: Vec<ManifestRecord> = Vec::new();
    loop {
        let after = all.last().map(|record| record.digest.to_string());
        let page = meta
            .manifests_page(repository, after.as_deref(), LISTING_PAGE)
            .await?;
        let done = page.len() < LISTING_PAGE;
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}

/// Every tag of `repository` with the digest it points at, in lexical order, read page by
/// page.
pub async fn all_tag_targets(
    meta: &dyn MetadataStore,
    repository: &RepositoryName,
) -> Result<Vec<(String, Digest)>> {
    let mut all: Vec<(String, Digest)> = Vec::new();
    loop {
        let after = all.last().map(|(tag, _)| tag.clone());
        let page = meta
            .tag_targets(repository, after.as_deref(), LISTING_PAGE)
            .await?;
        let done = page.len() < LISTING_PAGE;
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}
