//! [`S3BlobStore`]: the [`BlobStore`] port on S3.

use std::io;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::Region;
use berth_core::error::ErrorCode;
use berth_core::ports::{BlobStore, ByteStream, StagedUpload};
use berth_core::{Digest, RegistryError, Result, UploadId};
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use tokio_util::task::AbortOnDropHandle;

use crate::bucket::Bucket;
use crate::config::S3Config;
use crate::layout::{Layout, Writer};
use crate::staging::{MAX_PARTS, Piece, UploadState};

/// Blob bytes and upload staging in an S3 bucket. See the crate documentation for the layout
/// and how uploads are staged.
pub struct S3BlobStore {
    bucket: Bucket,
    layout: Layout,
    /// How long presigned URLs live, when reads are redirected.
    redirect: Option<Duration>,
    part_size: usize,
}

impl std::fmt::Debug for S3BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3BlobStore")
            .field("layout", &self.layout)
            .field("redirect", &self.redirect)
            .field("part_size", &self.part_size)
            .finish_non_exhaustive()
    }
}

impl S3BlobStore {
    /// A store using `client` (its credentials, HTTP connections, retry and timeout
    /// settings). The configuration's endpoint, path style and region, when set, override
    /// the client's. Makes no request.
    pub fn new(client: aws_sdk_s3::Client, config: S3Config) -> Result<Self> {
        config.validate()?;
        let mut settings = client.config().to_builder();
        if let Some(endpoint) = &config.endpoint_url {
            settings = settings.endpoint_url(endpoint);
        }
        if config.force_path_style {
            settings = settings.force_path_style(true);
        }
        if let Some(region) = &config.region {
            settings = settings.region(Region::new(region.clone()));
        }
        let client = aws_sdk_s3::Client::from_conf(settings.build());
        Ok(Self {
            bucket: Bucket::new(client, &config.bucket),
            layout: Layout::new(config.prefix.as_deref()),
            redirect: config.redirect.then_some(config.presign_expiry),
            part_size: config.part_size,
        })
    }

    /// The state of `staged`, checked against its size. An upload without state is unknown
    /// here (it was begun by another kind of store, or never); one whose state does not
    /// add up is an internal error, never trusted.
    fn state_of(&self, staged: &StagedUpload) -> Result<UploadState> {
        if staged.backend.is_empty() {
            return Err(upload_unknown(&staged.id));
        }
        UploadState::decode(&staged.backend, staged.size).map_err(|reason| {
            RegistryError::internal(format!("S3 blob store: upload {}: {reason}", staged.id))
        })
    }

    /// Streams a staging object, checking it holds what the state says.
    async fn read_piece(bucket: &Bucket, piece: &Piece, id: &UploadId) -> Result<ByteStream> {
        bucket
            .get(&piece.key, None, Some(piece.len))
            .await?
            .ok_or_else(|| upload_unknown(id))
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        self.bucket.head(&self.layout.blob(digest)).await
    }

    async fn read(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<ByteStream> {
        let key = self.layout.blob(digest);
        if let Some(range) = &range
            && range.is_empty()
        {
            // S3 cannot serve an empty range; only whether the blob exists is left to say.
            return match self.bucket.head(&key).await? {
                Some(_) => Ok(Box::pin(futures_util::stream::empty())),
                None => Err(blob_unknown(digest)),
            };
        }
        self.bucket
            .get(&key, range, None)
            .await?
            .ok_or_else(|| blob_unknown(digest))
    }

    async fn redirect_url(&self, digest: &Digest) -> Result<Option<String>> {
        match self.redirect {
            Some(expiry) => {
                let url = self
                    .bucket
                    .presigned_get(&self.layout.blob(digest), expiry)
                    .await?;
                Ok(Some(url))
            }
            None => Ok(None),
        }
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        self.bucket.delete(&self.layout.blob(digest)).await
    }

    async fn begin_upload(&self, _id: &UploadId) -> Result<Vec<u8>> {
        // Nothing exists in S3 until bytes arrive.
        Ok(UploadState::new(self.part_size).encode())
    }

    async fn append(&self, staged: &StagedUpload, mut body: ByteStream) -> Result<(u64, Vec<u8>)> {
        let state = self.state_of(staged)?;
        let mut append = Append::new(self, staged, &state);
        match append.run(&mut body).await {
            Ok(0) => Ok((0, staged.backend.clone())),
            Ok(written) => {
                let grown = state.grown(
                    staged.size,
                    append.writer,
                    append.parts,
                    append.new_tail.is_some(),
                );
                if let Some(stale) = state.stale_tail(&self.layout, &staged.id) {
                    // Only garbage if this fails: commit and abort clear the whole upload.
                    let _ = self.bucket.delete(&stale).await;
                }
                Ok((written, grown.encode()))
            }
            Err(failure) => {
                append.discard().await;
                Err(failure)
            }
        }
    }

    async fn read_staged(&self, staged: &StagedUpload) -> Result<ByteStream> {
        let state = self.state_of(staged)?;
        let mut pieces = state
            .pieces(&self.layout, &staged.id, staged.size)
            .into_iter();
        let Some(first) = pieces.next() else {
            return Ok(Box::pin(futures_util::stream::empty()));
        };
        // The first piece is opened now, so that a missing upload fails this call; the
        // others when the reader reaches them.
        let first = Self::read_piece(&self.bucket, &first, &staged.id).await?;
        let (bucket, id) = (self.bucket.clone(), staged.id.clone());
        let rest = futures_util::stream::iter(pieces)
            .then(move |piece| {
                let (bucket, id) = (bucket.clone(), id.clone());
                async move {
                    Self::read_piece(&bucket, &piece, &id)
                        .await
                        .map_err(io::Error::other)
                }
            })
            .try_flatten();
        Ok(Box::pin(first.chain(rest)))
    }

    async fn commit(&self, staged: &StagedUpload, digest: &Digest) -> Result<()> {
        let state = self.state_of(staged)?;
        let target = self.layout.blob(digest);
        if self.bucket.head(&target).await?.is_none() {
            let sources = state.pieces(&self.layout, &staged.id, staged.size);
            match self.bucket.concatenate(&sources, &target).await {
                Ok(Some(())) => {}
                // A commit of the same blob racing this one may have published it first (an
                // S3 server may then refuse or abort this one's assembly): the blob is what
                // was asked for, under its content address, verified by that commit.
                _ if self.bucket.head(&target).await?.is_some() => {}
                Ok(None) => return Err(upload_unknown(&staged.id)),
                Err(error) => return Err(error),
            }
        }
        // The blob is published: failing now would make the client retry an upload that
        // succeeded. Staging left behind is the lifecycle rule's to remove.
        let _ = self
            .bucket
            .delete_prefix(&self.layout.upload(&staged.id))
            .await;
        Ok(())
    }

    async fn abort(&self, staged: &StagedUpload) -> Result<()> {
        self.bucket
            .delete_prefix(&self.layout.upload(&staged.id))
            .await
    }
}

/// One append: the staged tail and the body, cut into full parts as they stream, and what
/// is left as a new tail. Every object it writes is named after its own random writer id,
/// so it never touches objects an earlier or a racing append wrote.
struct Append<'a> {
    store: &'a S3BlobStore,
    id: &'a UploadId,
    /// The staged tail, until its bytes are needed.
    old_tail: Option<Piece>,
    /// The upload's size before this append.
    start: u64,
    part_size: usize,
    writer: Writer,
    /// Full parts written so far.
    parts: u32,
    first_part: u32,
    /// The tail this append wrote.
    new_tail: Option<String>,
    buffer: BytesMut,
    /// The part being uploaded while the next one fills; aborted if the append is dropped.
    uploading: Option<AbortOnDropHandle<Result<()>>>,
}

impl<'a> Append<'a> {
    fn new(store: &'a S3BlobStore, staged: &'a StagedUpload, state: &UploadState) -> Self {
        Self {
            store,
            id: &staged.id,
            old_tail: state.tail(&store.layout, &staged.id, staged.size),
            start: staged.size,
            part_size: state.part_size(),
            writer: random_writer(),
            parts: 0,
            first_part: state.part_count() + 1,
            new_tail: None,
            buffer: BytesMut::new(),
            uploading: None,
        }
    }

    /// Appends the body and returns its length.
    async fn run(&mut self, body: &mut ByteStream) -> Result<u64> {
        let mut written = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                RegistryError::new(
                    ErrorCode::BlobUploadInvalid,
                    format!("the request body could not be read: {e}"),
                )
            })?;
            if chunk.is_empty() {
                continue;
            }
            if let Some(tail) = self.old_tail.take() {
                self.carry(&tail).await?;
            }
            written += chunk.len() as u64;
            self.push(chunk).await?;
        }
        self.finish(self.start + written).await?;
        Ok(written)
    }

    /// Starts the new bytes with the staged tail's.
    async fn carry(&mut self, tail: &Piece) -> Result<()> {
        let mut bytes = S3BlobStore::read_piece(&self.store.bucket, tail, self.id).await?;
        while let Some(chunk) = bytes.next().await {
            let chunk = chunk.map_err(|e| {
                RegistryError::unavailable(format!("S3 GetObject: reading a tail: {e}"))
            })?;
            self.push(chunk).await?;
        }
        Ok(())
    }

    async fn push(&mut self, mut chunk: Bytes) -> Result<()> {
        while !chunk.is_empty() {
            if self.buffer.is_empty() && chunk.len() >= self.part_size {
                // A whole part in one chunk goes out as it is, uncopied.
                let part = chunk.split_to(self.part_size);
                self.upload_part(part).await?;
                continue;
            }
            if self.buffer.is_empty() {
                self.buffer.reserve(self.part_size);
            }
            let take = chunk.len().min(self.part_size - self.buffer.len());
            self.buffer.extend_from_slice(&chunk.split_to(take));
            if self.buffer.len() == self.part_size {
                let part = self.buffer.split().freeze();
                self.upload_part(part).await?;
            }
        }
        Ok(())
    }

    /// Starts uploading a full part once the previous one is stored: at most two parts are
    /// in memory, one uploading while the next fills.
    async fn upload_part(&mut self, part: Bytes) -> Result<()> {
        self.wait_for_upload().await?;
        let number = self.first_part + self.parts;
        if number > MAX_PARTS {
            return Err(too_large(self.part_size));
        }
        let key = self.store.layout.part(self.id, number, self.writer);
        let bucket = self.store.bucket.clone();
        self.parts += 1;
        let upload = tokio::spawn(async move { bucket.put(&key, part).await });
        self.uploading = Some(AbortOnDropHandle::new(upload));
        Ok(())
    }

    async fn wait_for_upload(&mut self) -> Result<()> {
        match self.uploading.take() {
            Some(upload) => upload
                .await
                .map_err(|e| RegistryError::internal(format!("uploading a part: {e}")))?,
            None => Ok(()),
        }
    }

    /// Stores what is left after the last full part as the new tail, which ends at `end`.
    async fn finish(&mut self, end: u64) -> Result<()> {
        self.wait_for_upload().await?;
        if self.buffer.is_empty() {
            return Ok(());
        }
        if self.first_part + self.parts > MAX_PARTS {
            return Err(too_large(self.part_size));
        }
        let key = self.store.layout.tail(self.id, end, self.writer);
        self.new_tail = Some(key.clone());
        self.store
            .bucket
            .put(&key, self.buffer.split().freeze())
            .await
    }

    /// Removes what this append wrote, after it failed. Anything missed (a part still in
    /// flight when the request was dropped) is removed with the whole upload later.
    async fn discard(&mut self) {
        self.uploading = None;
        let layout = &self.store.layout;
        let mut keys: Vec<String> = (0..self.parts)
            .map(|i| layout.part(self.id, self.first_part + i, self.writer))
            .collect();
        keys.extend(self.new_tail.take());
        for key in keys {
            let _ = self.store.bucket.delete(&key).await;
        }
    }
}

fn random_writer() -> Writer {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    Writer::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn too_large(part_size: usize) -> RegistryError {
    RegistryError::new(
        ErrorCode::PayloadTooLarge,
        format!(
            "a blob may hold at most {} bytes here",
            u64::from(MAX_PARTS) * part_size as u64
        ),
    )
}

fn blob_unknown(digest: &Digest) -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUnknown,
        format!("blob {digest} is not known"),
    )
}

fn upload_unknown(id: &UploadId) -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUploadUnknown,
        format!("upload {id} has no staged bytes"),
    )
}
