//! The registry's use cases, written against the storage ports. Every entry point (Lambda
//! functions, the local server) drives the same `Registry`.

use std::collections::HashSet;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::accounts::AccountStore;
use crate::digest::{Algorithm, Digest, DigestHasher};
use crate::error::{ErrorCode, ErrorHint, RegistryError, Result};
use crate::events::{Event, EventKind, EventSink, RequestContext};
use crate::gc::{Claim, GarbageIndex};
use crate::immutable::TagGuard;
use crate::manifest::{ReferrerDescriptor, parse_manifest};
use crate::names::{Reference, RepositoryName, UploadId};
use crate::ports::{
    BlobStore, ByteStream, ManifestRecord, MetadataStore, StagedUpload, UploadSession,
};
use crate::quota::{QuotaStore, Refusal, quota_exceeded};
use crate::range::{ChunkRange, resolve_range};

/// How often, and how long apart, a claim is tried while a collection run deletes the blob
/// (deleting one blob takes one store call and two metadata writes).
const CLAIM_ATTEMPTS: u32 = 100;
const CLAIM_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Largest page a tag or catalog listing serves.
pub const MAX_PAGE_SIZE: usize = 10_000;
/// Page size when the client gives no `n`.
pub const DEFAULT_PAGE_SIZE: usize = 1_000;

/// A registry over one blob store and one metadata store.
pub struct Registry {
    blobs: Arc<dyn BlobStore>,
    meta: Arc<dyn MetadataStore>,
    busy_uploads: Arc<Mutex<HashSet<UploadId>>>,
    events: Option<Arc<dyn EventSink>>,
    garbage: Option<Arc<dyn GarbageIndex>>,
    quotas: Option<Arc<dyn QuotaStore>>,
    tag_guard: Option<TagGuard>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

fn blob_pushed(repository: &RepositoryName, digest: &Digest, size: u64) -> EventKind {
    EventKind::BlobPushed {
        repository: repository.clone(),
        digest: digest.clone(),
        size,
    }
}

/// How a blob read is answered.
#[derive(Debug)]
pub enum BlobRead {
    /// The client should fetch the bytes from this URL.
    Redirect(String),
    /// The bytes, or `range` of them, of a blob `size` bytes long.
    Bytes {
        size: u64,
        range: Option<Range<u64>>,
        body: StreamBody,
    },
}

/// A body stream with a `Debug` impl, so results holding one can be inspected in tests.
pub struct StreamBody(pub ByteStream);

impl std::fmt::Debug for StreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamBody")
    }
}

/// The outcome of `POST /blobs/uploads/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadStart {
    /// A session was opened; the client continues at byte `size` (always 0 here).
    Session { id: UploadId, size: u64 },
    /// The blob was mounted from another repository: nothing to upload.
    Mounted(Digest),
}

/// A page of a listing and whether more entries follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub entries: Vec<String>,
    pub more: bool,
}

/// Referrers of a subject, and whether an `artifactType` filter was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrers {
    pub manifests: Vec<ReferrerDescriptor>,
    pub filtered: bool,
}

impl Registry {
    pub fn new(blobs: Arc<dyn BlobStore>, meta: Arc<dyn MetadataStore>) -> Self {
        Self {
            blobs,
            meta,
            busy_uploads: Arc::default(),
            events: None,
            garbage: None,
            quotas: None,
            tag_guard: None,
        }
    }

    /// Checks each blob against its project's storage limit before publishing it (the
    /// metadata store enforces the limit on manifest puts: see [`crate::quota`]).
    pub fn with_quotas(mut self, quotas: Arc<dyn QuotaStore>) -> Self {
        self.quotas = Some(quotas);
        self
    }

    /// Refuses a blob that would take its project past its storage limit, unless the
    /// project counts it already. Advisory: the manifest put is the check that holds.
    async fn check_quota(
        &self,
        context: &RequestContext,
        repository: &RepositoryName,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        let Some(quotas) = &self.quotas else {
            return Ok(());
        };
        let project = repository.project();
        let quota = quotas.quota(project).await?;
        if quota.fits(size) {
            return Ok(());
        }
        if quotas
            .counted(project, std::slice::from_ref(digest))
            .await?
            .first()
            .copied()
            .unwrap_or(false)
        {
            return Ok(());
        }
        let refused = quota_exceeded(project, &quota, size);
        self.publish_refusal(context, repository, digest, &refused);
        Err(refused)
    }

    fn publish_refusal(
        &self,
        context: &RequestContext,
        repository: &RepositoryName,
        digest: &Digest,
        error: &RegistryError,
    ) {
        if let Some(refusal) = Refusal::of(error) {
            self.publish(context, || EventKind::QuotaExceeded {
                repository: repository.clone(),
                digest: digest.clone(),
                used: refusal.used,
                adding: refusal.adding,
                limit: refusal.limit,
            });
        }
    }

    /// Enforces the projects' tag immutability rules, read from `accounts`, on manifest
    /// pushes by tag and on deletions (see [`crate::immutable`]).
    pub fn with_immutable_tags(mut self, accounts: Arc<dyn AccountStore>) -> Self {
        self.tag_guard = Some(TagGuard::new(accounts, self.meta.clone()));
        self
    }

    /// Claims each blob in `index` before its bytes are published or it is linked, so that
    /// garbage collection running meanwhile never deletes it (see [`crate::gc`]).
    pub fn with_garbage_index(mut self, index: Arc<dyn GarbageIndex>) -> Self {
        self.garbage = Some(index);
        self
    }

    /// Claims a blob about to be published or linked; waits while a collection run deletes
    /// it (then it is uploaded anew). `false`: the blob is being deleted and the wait is up.
    async fn claim_blob(&self, digest: &Digest, size: u64) -> Result<bool> {
        let Some(index) = &self.garbage else {
            return Ok(true);
        };
        for _ in 0..CLAIM_ATTEMPTS {
            match index.claim_blob(digest, size, crate::gc::now_ms()).await? {
                Claim::Claimed => return Ok(true),
                Claim::Collecting => tokio::time::sleep(CLAIM_PAUSE).await,
            }
        }
        Ok(false)
    }

    /// Publishes what happens to `events` (in a Lambda deployment the table's stream and the
    /// functions' log lines carry it instead).
    pub fn with_events(mut self, events: Arc<dyn EventSink>) -> Self {
        self.events = Some(events);
        self
    }

    fn publish(&self, context: &RequestContext, kind: impl FnOnce() -> EventKind) {
        if let Some(events) = &self.events {
            events.publish(&Event::now(context, kind()));
        }
    }

    // ----- manifests -----

    /// The manifest a tag or digest names, without recording a pull (`HEAD`, copies).
    pub async fn manifest(
        &self,
        repository: &RepositoryName,
        reference: &Reference,
    ) -> Result<ManifestRecord> {
        let found = match reference {
            Reference::Tag(tag) => self.meta.tagged_manifest(repository, tag).await?,
            Reference::Digest(digest) => self.meta.manifest(repository, digest).await?,
        };
        found.ok_or_else(|| manifest_unknown(reference))
    }

    /// The manifest a tag or digest names, pulled in `context`.
    pub async fn pull_manifest(
        &self,
        context: &RequestContext,
        repository: &RepositoryName,
        reference: &Reference,
    ) -> Result<ManifestRecord> {
        let record = self.manifest(repository, reference).await?;
        self.publish(context, || EventKind::ManifestPulled {
            repository: repository.clone(),
            reference: reference.clone(),
            digest: record.digest.clone(),
        });
        Ok(record)
    }

    /// Validates and stores a manifest; a tag reference is moved to it. Returns the record.
    pub async fn put_manifest(
        &self,
        context: &RequestContext,
        repository: &RepositoryName,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> Result<ManifestRecord> {
        let parsed = parse_manifest(content_type, &bytes)?;
        let digest = match reference {
            Reference::Digest(expected) => {
                let actual = Digest::of(expected.algorithm(), &bytes);
                if &actual != expected {
                    return Err(RegistryError::new(
                        ErrorCode::DigestInvalid,
                        format!("manifest digest is {actual}, not {expected}"),
                    ));
                }
                actual
            }
            Reference::Tag(_) => Digest::of(Algorithm::Sha256, &bytes),
        };

        let blob_digests: Vec<Digest> = parsed.blobs.iter().map(|t| t.digest.clone()).collect();
        let sizes = self.meta.blob_links(repository, &blob_digests).await?;
        for (target, size) in parsed.blobs.iter().zip(sizes) {
            match size {
                None => return Err(manifest_blob_unknown(&target.digest, "blob")),
                Some(size) if size != target.size => {
                    return Err(RegistryError::new(
                        ErrorCode::ManifestInvalid,
                        format!(
                            "descriptor of {} says {} bytes, the blob has {size}",
                            target.digest, target.size
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        let child_digests: Vec<Digest> =
            parsed.manifests.iter().map(|t| t.digest.clone()).collect();
        let present = self
            .meta
            .manifests_present(repository, &child_digests)
            .await?;
        if let Some((missing, _)) = child_digests.iter().zip(present).find(|(_, p)| !p) {
            return Err(manifest_blob_unknown(missing, "manifest"));
        }

        let referrer = parsed.subject.map(|subject| {
            (
                subject,
                ReferrerDescriptor {
                    media_type: parsed.media_type.clone(),
                    digest: digest.clone(),
                    size: bytes.len() as u64,
                    artifact_type: parsed.artifact_type,
                    annotations: parsed.annotations,
                },
            )
        });
        let record = ManifestRecord {
            digest,
            media_type: parsed.media_type,
            bytes,
            referrer,
        };
        let tag = match reference {
            Reference::Tag(tag) => Some(tag),
            Reference::Digest(_) => None,
        };
        if let (Some(guard), Some(tag)) = (&self.tag_guard, tag) {
            guard
                .check_tag_move(repository, tag, &record.digest)
                .await?;
        }
        if let Err(error) = self.meta.put_manifest(repository, &record, tag).await {
            self.publish_refusal(context, repository, &record.digest, &error);
            return Err(error);
        }
        self.publish(context, || EventKind::ManifestPushed {
            repository: repository.clone(),
            digest: record.digest.clone(),
            tag: tag.cloned(),
            media_type: record.media_type.clone(),
            size: record.bytes.len() as u64,
        });
        Ok(record)
    }

    /// Deletes a manifest (by digest, with every tag pointing at it) or only a tag.
    pub async fn delete_manifest(
        &self,
        context: &RequestContext,
        repository: &RepositoryName,
        reference: &Reference,
    ) -> Result<()> {
        if let Some(guard) = &self.tag_guard {
            match reference {
                Reference::Digest(digest) => {
                    guard.check_manifest_delete(repository, digest).await?;
                }
                Reference::Tag(tag) => guard.check_tag_delete(repository, tag).await?,
            }
        }
        let existed = match reference {
            Reference::Digest(digest) => self.meta.delete_manifest(repository, digest).await?,
            Reference::Tag(tag) => self.meta.delete_tag(repository, tag).await?,
        };
        if !existed {
            return Err(manifest_unknown(reference));
        }
        self.publish(context, || match reference {
            Reference::Digest(digest) => EventKind::ManifestDeleted {
                repository: repository.clone(),
                digest: digest.clone(),
            },
            Reference::Tag(tag) => EventKind::TagDeleted {
                repository: repository.clone(),
                tag: tag.clone(),
            },
        });
        Ok(())
    }

    // ----- blobs -----

    /// The size of a blob the repository may serve.
    pub async fn blob_size(&self, repository: &RepositoryName, digest: &Digest) -> Result<u64> {
        let sizes = self
            .meta
            .blob_links(repository, std::slice::from_ref(digest))
            .await?;
        sizes
            .into_iter()
            .next()
            .flatten()
            .ok_or_else(|| blob_unknown(digest))
    }

    /// Reads a blob, or the part a `Range` header asks for.
    pub async fn read_blob(
        &self,
        context: &RequestContext,
        repository: &RepositoryName,
        digest: &Digest,
        range_header: Option<&str>,
    ) -> Result<BlobRead> {
        let size = self.blob_size(repository, digest).await?;
        let pulled = || EventKind::BlobPulled {
            repository: repository.clone(),
            digest: digest.clone(),
        };
        if let Some(url) = self.blobs.redirect_url(digest).await? {
            self.publish(context, pulled);
            return Ok(BlobRead::Redirect(url));
        }
        let range = resolve_range(range_header, size)?;
        let body = self.blobs.read(digest, range.clone()).await?;
        self.publish(context, pulled);
        Ok(BlobRead::Bytes {
            size,
            range,
            body: StreamBody(body),
        })
    }

    /// The whole blob as a stream, never a redirect: for copying it elsewhere.
    pub async fn blob_stream(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Result<(u64, ByteStream)> {
        let size = self.blob_size(repository, digest).await?;
        Ok((size, self.blobs.read(digest, None).await?))
    }

    /// Removes the repository's link to a blob. The bytes stay until garbage collection.
    pub async fn delete_blob(
        &self,
        context: &RequestContext,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Result<()> {
        if self.meta.unlink_blob(repository, digest).await? {
            self.publish(context, || EventKind::BlobDeleted {
                repository: repository.clone(),
                digest: digest.clone(),
            });
            Ok(())
        } else {
            Err(blob_unknown(digest))
        }
    }

    // ----- uploads -----

    /// Opens an upload session, or mounts blob `digest` from the first of `sources` that
    /// links it (a named `from`, or the repositories the caller may pull from, the target
    /// first: automatic content discovery). A blob the target links already is mounted as it
    /// is.
    pub async fn start_upload(
        &self,
        context: &RequestContext,
        repository: &RepositoryName,
        mount: Option<(&Digest, &[RepositoryName])>,
    ) -> Result<UploadStart> {
        if let Some((digest, sources)) = mount {
            for from in sources {
                let sizes = self
                    .meta
                    .blob_links(from, std::slice::from_ref(digest))
                    .await?;
                let Some(size) = sizes.into_iter().next().flatten() else {
                    continue;
                };
                if from == repository {
                    return Ok(UploadStart::Mounted(digest.clone()));
                }
                self.check_quota(context, repository, digest, size).await?;
                if !self.claim_blob(digest, size).await? {
                    break;
                }
                self.meta.link_blob(repository, digest, size).await?;
                self.publish(context, || EventKind::BlobMounted {
                    repository: repository.clone(),
                    digest: digest.clone(),
                    from: from.clone(),
                });
                return Ok(UploadStart::Mounted(digest.clone()));
            }
        }
        let id = UploadId::generate();
        let backend = self.blobs.begin_upload(&id).await?;
        let session = UploadSession {
            repository: repository.clone(),
            staged: StagedUpload {
                id: id.clone(),
                size: 0,
                backend,
            },
            hash: DigestHasher::new(Algorithm::Sha256).save(),
            started_at: unix_now(),
        };
        self.meta.create_upload(&session).await?;
        Ok(UploadStart::Session { id, size: 0 })
    }

    /// Uploads a whole blob in one request (`POST ?digest=`), verifying it as it streams.
    pub async fn upload_whole(
        &self,
        context: &RequestContext,
        repository: &RepositoryName,
        digest: &Digest,
        body: ByteStream,
    ) -> Result<()> {
        let id = UploadId::generate();
        let staged = StagedUpload {
            backend: self.blobs.begin_upload(&id).await?,
            id,
            size: 0,
        };
        let outcome = async {
            let hasher = SharedHasher::new(DigestHasher::new(digest.algorithm()));
            let (written, backend) = self.blobs.append(&staged, hasher.wrap(body)).await?;
            let staged = StagedUpload {
                size: written,
                backend,
                ..staged.clone()
            };
            verify_digest(hasher.finish(), digest)?;
            self.check_quota(context, repository, digest, written)
                .await?;
            if !self.claim_blob(digest, written).await? {
                return Err(crate::gc::still_collecting(digest));
            }
            self.blobs.commit(&staged, digest).await?;
            self.meta.link_blob(repository, digest, written).await?;
            Ok(written)
        }
        .await;
        match outcome {
            Ok(size) => {
                self.publish(context, || blob_pushed(repository, digest, size));
                Ok(())
            }
            Err(error) => {
                self.blobs.abort(&staged).await.ok();
                Err(error)
            }
        }
    }

    /// The number of bytes an upload holds so far.
    pub async fn upload_progress(&self, repository: &RepositoryName, id: &UploadId) -> Result<u64> {
        Ok(self.session(repository, id).await?.staged.size)
    }

    /// Appends a chunk (streamed, or at the position `range` says) and returns the new size.
    pub async fn append_upload(
        &self,
        repository: &RepositoryName,
        id: &UploadId,
        range: Option<ChunkRange>,
        body: ByteStream,
    ) -> Result<u64> {
        let _busy = self.claim(repository, id).await?;
        let session = self.session(repository, id).await?;
        Ok(self.append(session, range, body).await?.staged.size)
    }

    /// Closes an upload: appends the final chunk if any, verifies the digest, publishes the
    /// blob and links it to the repository.
    pub async fn complete_upload(
        &self,
        context: &RequestContext,
        repository: &RepositoryName,
        id: &UploadId,
        digest: &Digest,
        last_chunk: Option<(Option<ChunkRange>, ByteStream)>,
    ) -> Result<()> {
        let _busy = self.claim(repository, id).await?;
        let mut session = self.session(repository, id).await?;
        if let Some((range, body)) = last_chunk {
            session = self.append(session, range, body).await?;
        }
        let actual = if session.hash.algorithm == digest.algorithm() {
            DigestHasher::restore(&session.hash)?.finish()
        } else {
            self.rehash(&session.staged, digest.algorithm()).await?
        };
        if let Err(mismatch) = verify_digest(actual, digest) {
            self.discard(&session).await;
            return Err(mismatch);
        }
        if let Err(refused) = self
            .check_quota(context, repository, digest, session.staged.size)
            .await
        {
            self.discard(&session).await;
            return Err(refused);
        }
        if !self.claim_blob(digest, session.staged.size).await? {
            return Err(crate::gc::still_collecting(digest));
        }
        self.blobs.commit(&session.staged, digest).await?;
        self.meta
            .link_blob(repository, digest, session.staged.size)
            .await?;
        self.meta.delete_upload(id).await?;
        self.publish(context, || {
            blob_pushed(repository, digest, session.staged.size)
        });
        Ok(())
    }

    /// Cancels an upload and drops what it staged.
    pub async fn cancel_upload(&self, repository: &RepositoryName, id: &UploadId) -> Result<()> {
        let _busy = self.claim(repository, id).await?;
        let session = self.session(repository, id).await?;
        self.blobs.abort(&session.staged).await?;
        self.meta.delete_upload(id).await
    }

    async fn session(&self, repository: &RepositoryName, id: &UploadId) -> Result<UploadSession> {
        match self.meta.upload(id).await? {
            Some(session) if &session.repository == repository => Ok(session),
            _ => Err(RegistryError::new(
                ErrorCode::BlobUploadUnknown,
                format!("no upload session {id} in {repository}"),
            )),
        }
    }

    async fn append(
        &self,
        session: UploadSession,
        range: Option<ChunkRange>,
        body: ByteStream,
    ) -> Result<UploadSession> {
        let size = session.staged.size;
        if let Some(range) = range
            && range.start != size
        {
            return Err(out_of_order(
                &session,
                format!(
                    "chunk starts at byte {}, the upload holds {size} bytes",
                    range.start
                ),
            ));
        }
        let hasher = SharedHasher::new(DigestHasher::restore(&session.hash)?);
        let (written, backend) = self
            .blobs
            .append(&session.staged, hasher.wrap(body))
            .await?;
        if let Some(range) = range
            && range.byte_count() != written
        {
            return Err(RegistryError::new(
                ErrorCode::BlobUploadInvalid,
                format!(
                    "Content-Range announced {} bytes, the body had {written}",
                    range.byte_count()
                ),
            ));
        }
        let updated = UploadSession {
            staged: StagedUpload {
                size: size + written,
                backend,
                ..session.staged.clone()
            },
            hash: hasher.save(),
            ..session.clone()
        };
        if !self.meta.update_upload(&updated, size).await? {
            let current = self
                .meta
                .upload(&session.staged.id)
                .await?
                .unwrap_or(session);
            return Err(out_of_order(
                &current,
                "another chunk was written first".into(),
            ));
        }
        Ok(updated)
    }

    async fn rehash(&self, staged: &StagedUpload, algorithm: Algorithm) -> Result<Digest> {
        let mut hasher = DigestHasher::new(algorithm);
        let mut bytes = self.blobs.read_staged(staged).await?;
        while let Some(chunk) = bytes.next().await {
            hasher.update(&chunk.map_err(RegistryError::internal)?);
        }
        Ok(hasher.finish())
    }

    async fn discard(&self, session: &UploadSession) {
        self.blobs.abort(&session.staged).await.ok();
        self.meta.delete_upload(&session.staged.id).await.ok();
    }

    /// Claims an upload for one request at a time within this process; a second request
    /// on the same upload meanwhile is told where the upload stands, as for a race lost.
    async fn claim(&self, repository: &RepositoryName, id: &UploadId) -> Result<BusyUpload> {
        let claimed = self
            .busy_uploads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone());
        if !claimed {
            let session = self.session(repository, id).await?;
            return Err(out_of_order(
                &session,
                "another request is writing to this upload".into(),
            ));
        }
        Ok(BusyUpload {
            set: Arc::clone(&self.busy_uploads),
            id: id.clone(),
        })
    }

    // ----- listings -----

    /// A page of a repository's tags, in lexical order.
    pub async fn tags(
        &self,
        repository: &RepositoryName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Page> {
        let limit = page_size(n)?;
        let mut entries = self.meta.tags(repository, last, limit + 1).await?;
        if entries.is_empty() && !self.meta.repository_exists(repository).await? {
            return Err(RegistryError::new(
                ErrorCode::NameUnknown,
                format!("repository {repository} is not known"),
            ));
        }
        Ok(page(&mut entries, limit))
    }

    /// A page of the repository catalog, in lexical order.
    pub async fn catalog(&self, n: Option<usize>, last: Option<&str>) -> Result<Page> {
        let limit = page_size(n)?;
        let mut entries = self.meta.repositories(last, limit + 1).await?;
        Ok(page(&mut entries, limit))
    }

    /// Manifests that name `subject`, optionally only those of one artifact type.
    pub async fn referrers(
        &self,
        repository: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Referrers> {
        let mut manifests = self.meta.referrers(repository, subject).await?;
        if let Some(wanted) = artifact_type {
            manifests.retain(|m| m.artifact_type.as_deref() == Some(wanted));
        }
        Ok(Referrers {
            manifests,
            filtered: artifact_type.is_some(),
        })
    }
}

/// The path a client continues an upload at.
pub fn upload_location(repository: &RepositoryName, id: &UploadId) -> String {
    format!("/v2/{repository}/blobs/uploads/{id}")
}

fn page_size(n: Option<usize>) -> Result<usize> {
    match n {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(n) if n <= MAX_PAGE_SIZE => Ok(n),
        Some(n) => Err(RegistryError::new(
            ErrorCode::PaginationNumberInvalid,
            format!("n={n} is more than the {MAX_PAGE_SIZE} entries a page may hold"),
        )),
    }
}

fn page(entries: &mut Vec<String>, limit: usize) -> Page {
    let more = entries.len() > limit;
    entries.truncate(limit);
    Page {
        entries: std::mem::take(entries),
        more,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn verify_digest(actual: Digest, expected: &Digest) -> Result<()> {
    if &actual == expected {
        Ok(())
    } else {
        Err(RegistryError::new(
            ErrorCode::DigestInvalid,
            format!("uploaded content has digest {actual}, not {expected}"),
        ))
    }
}

fn out_of_order(session: &UploadSession, message: String) -> RegistryError {
    RegistryError::new(ErrorCode::RangeInvalid, message).with_hint(ErrorHint::UploadProgress {
        location: upload_location(&session.repository, &session.staged.id),
        size: session.staged.size,
    })
}

fn manifest_unknown(reference: &Reference) -> RegistryError {
    RegistryError::new(
        ErrorCode::ManifestUnknown,
        format!("manifest {reference} is not known"),
    )
}

fn blob_unknown(digest: &Digest) -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUnknown,
        format!("blob {digest} is not known"),
    )
    .with_detail(serde_json::json!({ "digest": digest }))
}

fn manifest_blob_unknown(digest: &Digest, what: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::ManifestBlobUnknown,
        format!("the manifest references {what} {digest}, which is not in this repository"),
    )
    .with_detail(serde_json::json!({ "digest": digest }))
}

/// Releases an upload claimed with [`Registry::claim`] when the request ends.
struct BusyUpload {
    set: Arc<Mutex<HashSet<UploadId>>>,
    id: UploadId,
}

impl Drop for BusyUpload {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// A hasher fed by a body stream as a blob store consumes it.
#[derive(Clone)]
struct SharedHasher(Arc<Mutex<DigestHasher>>);

impl SharedHasher {
    fn new(hasher: DigestHasher) -> Self {
        Self(Arc::new(Mutex::new(hasher)))
    }

    fn wrap(&self, inner: ByteStream) -> ByteStream {
        Box::pin(HashingStream {
            inner,
            hasher: self.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DigestHasher> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn save(&self) -> crate::digest::SavedHash {
        self.lock().save()
    }

    fn finish(&self) -> Digest {
        self.lock().clone().finish()
    }
}

struct HashingStream {
    inner: ByteStream,
    hasher: SharedHasher,
}

impl Stream for HashingStream {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled {
            self.hasher.lock().update(chunk);
        }
        polled
    }
}
