//! The two ends of a copy: this registry (through the registry core) or a remote one
//! (through the OCI distribution protocol). The copy engine sees both alike, so push and pull
//! policies run the same code.

use std::sync::Arc;

use async_trait::async_trait;
use berth_core::ports::ByteStream;
use berth_core::registry::UploadStart;
use berth_core::{
    Digest, ErrorCode, Reference, Registry, RegistryError, RepositoryName, RequestContext,
};
use bytes::Bytes;

use crate::remote::{RemoteError, RemoteManifest, RemoteRegistry};

/// Why a step of a copy failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{0}")]
    Remote(#[from] RemoteError),
    #[error("{0}")]
    Local(#[from] RegistryError),
    #[error("{0}")]
    Invalid(String),
}

impl CopyError {
    /// Whether trying again later may succeed (the far end was down or overloaded).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Remote(e) => e.is_retryable(),
            Self::Local(e) => e.code() == ErrorCode::Unavailable,
            Self::Invalid(_) => false,
        }
    }
}

pub type CopyResult<T> = Result<T, CopyError>;

/// A registry a copy reads from or writes to.
#[async_trait]
pub trait End: Send + Sync {
    /// For messages: `this registry` or the remote's URL.
    fn describe(&self) -> String;
    async fn manifest(&self, repo: &str, reference: &str) -> CopyResult<Option<RemoteManifest>>;
    async fn manifest_digest(&self, repo: &str, reference: &str) -> CopyResult<Option<Digest>>;
    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> CopyResult<Digest>;
    async fn delete_manifest(&self, repo: &str, reference: &str) -> CopyResult<bool>;
    async fn blob_size(&self, repo: &str, digest: &Digest) -> CopyResult<Option<u64>>;
    async fn blob(&self, repo: &str, digest: &Digest) -> CopyResult<(u64, ByteStream)>;
    /// Links a blob another repository of this end has; false when it could not.
    async fn mount_blob(&self, repo: &str, digest: &Digest, from: &str) -> CopyResult<bool>;
    /// Stores a blob, verified against `digest`; returns the bytes sent.
    async fn push_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        body: ByteStream,
    ) -> CopyResult<u64>;
    async fn tags(&self, repo: &str) -> CopyResult<Vec<String>>;
    async fn repositories(&self) -> CopyResult<Vec<String>>;
}

#[async_trait]
impl End for RemoteRegistry {
    fn describe(&self) -> String {
        self.url().to_owned()
    }

    async fn manifest(&self, repo: &str, reference: &str) -> CopyResult<Option<RemoteManifest>> {
        Ok(RemoteRegistry::manifest(self, repo, reference).await?)
    }

    async fn manifest_digest(&self, repo: &str, reference: &str) -> CopyResult<Option<Digest>> {
        Ok(self
            .manifest_head(repo, reference)
            .await?
            .map(|(digest, _)| digest))
    }

    async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> CopyResult<Digest> {
        Ok(RemoteRegistry::put_manifest(self, repo, reference, media_type, bytes).await?)
    }

    async fn delete_manifest(&self, repo: &str, reference: &str) -> CopyResult<bool> {
        Ok(RemoteRegistry::delete_manifest(self, repo, reference).await?)
    }

    async fn blob_size(&self, repo: &str, digest: &Digest) -> CopyResult<Option<u64>> {
        Ok(RemoteRegistry::blob_size(self, repo, digest).await?)
    }

    async fn blob(&self, repo: &str, digest: &Digest) -> CopyResult<(u64, ByteStream)> {
        Ok(RemoteRegistry::blob(self, repo, digest).await?)
    }

    async fn mount_blob(&self, repo: &str, digest: &Digest, from: &str) -> CopyResult<bool> {
        Ok(RemoteRegistry::mount_blob(self, repo, digest, from).await?)
    }

    async fn push_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        body: ByteStream,
    ) -> CopyResult<u64> {
        Ok(RemoteRegistry::push_blob(self, repo, digest, size, body).await?)
    }

    async fn tags(&self, repo: &str) -> CopyResult<Vec<String>> {
        Ok(RemoteRegistry::tags(self, repo).await?)
    }

    async fn repositories(&self) -> CopyResult<Vec<String>> {
        Ok(self.catalog().await?)
    }
}

/// This registry, through the registry core: every manifest and blob it takes is verified
/// as any push is.
#[derive(Debug, Clone)]
pub struct LocalEnd {
    registry: Arc<Registry>,
    /// What replication does here is done by replication.
    context: RequestContext,
}

impl LocalEnd {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            context: RequestContext::system("replication", ""),
        }
    }
}

fn repository(name: &str) -> CopyResult<RepositoryName> {
    Ok(name.parse::<RepositoryName>()?)
}

fn reference(text: &str) -> CopyResult<Reference> {
    Ok(text.parse::<Reference>()?)
}

/// `None` for "there is none", the error for anything else.
fn absent_if<T>(result: berth_core::Result<T>, codes: &[ErrorCode]) -> CopyResult<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if codes.contains(&e.code()) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

const MANIFEST_ABSENT: &[ErrorCode] = &[ErrorCode::ManifestUnknown, ErrorCode::NameUnknown];
const BLOB_ABSENT: &[ErrorCode] = &[ErrorCode::BlobUnknown, ErrorCode::NameUnknown];

#[async_trait]
impl End for LocalEnd {
    fn describe(&self) -> String {
        "this registry".to_owned()
    }

    async fn manifest(
        &self,
        repo: &str,
        reference_text: &str,
    ) -> CopyResult<Option<RemoteManifest>> {
        let record = self
            .registry
            .manifest(&repository(repo)?, &reference(reference_text)?)
            .await;
        Ok(
            absent_if(record, MANIFEST_ABSENT)?.map(|record| RemoteManifest {
                digest: record.digest,
                media_type: record.media_type,
                bytes: record.bytes,
            }),
        )
    }

    async fn manifest_digest(&self, repo: &str, reference: &str) -> CopyResult<Option<Digest>> {
        Ok(End::manifest(self, repo, reference)
            .await?
            .map(|manifest| manifest.digest))
    }

    async fn put_manifest(
        &self,
        repo: &str,
        reference_text: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> CopyResult<Digest> {
        let record = self
            .registry
            .put_manifest(
                &self.context,
                &repository(repo)?,
                &reference(reference_text)?,
                Some(media_type),
                bytes,
            )
            .await?;
        Ok(record.digest)
    }

    async fn delete_manifest(&self, repo: &str, reference_text: &str) -> CopyResult<bool> {
        let deleted = self
            .registry
            .delete_manifest(
                &self.context,
                &repository(repo)?,
                &reference(reference_text)?,
            )
            .await;
        Ok(absent_if(deleted, MANIFEST_ABSENT)?.is_some())
    }

    async fn blob_size(&self, repo: &str, digest: &Digest) -> CopyResult<Option<u64>> {
        absent_if(
            self.registry.blob_size(&repository(repo)?, digest).await,
            BLOB_ABSENT,
        )
    }

    async fn blob(&self, repo: &str, digest: &Digest) -> CopyResult<(u64, ByteStream)> {
        Ok(self
            .registry
            .blob_stream(&repository(repo)?, digest)
            .await?)
    }

    async fn mount_blob(&self, repo: &str, digest: &Digest, from: &str) -> CopyResult<bool> {
        let target = repository(repo)?;
        let from = repository(from)?;
        match self
            .registry
            .start_upload(
                &self.context,
                &target,
                Some((digest, std::slice::from_ref(&from))),
            )
            .await?
        {
            UploadStart::Mounted(_) => Ok(true),
            UploadStart::Session { id, .. } => {
                self.registry.cancel_upload(&target, &id).await.ok();
                Ok(false)
            }
        }
    }

    async fn push_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        body: ByteStream,
    ) -> CopyResult<u64> {
        self.registry
            .upload_whole(&self.context, &repository(repo)?, digest, body)
            .await?;
        Ok(size)
    }

    async fn tags(&self, repo: &str) -> CopyResult<Vec<String>> {
        let name = repository(repo)?;
        let mut tags = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let page = self.registry.tags(&name, None, last.as_deref()).await;
            let Some(page) = absent_if(page, &[ErrorCode::NameUnknown])? else {
                return Ok(tags);
            };
            last = page.entries.last().cloned();
            tags.extend(page.entries);
            if !page.more {
                return Ok(tags);
            }
        }
    }

    async fn repositories(&self) -> CopyResult<Vec<String>> {
        let mut names = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let page = self.registry.catalog(None, last.as_deref()).await?;
            last = page.entries.last().cloned();
            names.extend(page.entries);
            if !page.more {
                return Ok(names);
            }
        }
    }
}
