//! [`Bucket`]: the few S3 requests the store makes, each with its failures sorted, and the
//! SDK's types kept inside this module.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use berth_core::ports::ByteStream;
use berth_core::{RegistryError, Result};
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::errors::{Failure, classify, failed};
use crate::staging::{MIN_PART_SIZE, Piece};

/// Content type of every object: blobs are opaque bytes (manifests are served by the
/// registry itself, with their own media types).
const CONTENT_TYPE: &str = "application/octet-stream";
/// Parts transferred into a multipart upload at once when a blob is assembled.
const PART_CONCURRENCY: usize = 8;
/// The most keys one `DeleteObjects` request takes.
const DELETE_BATCH: usize = 1000;
/// What `x-amz-copy-source` leaves unencoded: RFC 3986's unreserved characters and `/`.
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// One bucket through one client. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    client: Client,
    name: Arc<str>,
}

impl Bucket {
    pub(crate) fn new(client: Client, name: &str) -> Self {
        Self {
            client,
            name: name.into(),
        }
    }

    /// The object's size, or `None` if there is no such object.
    pub(crate) async fn head(&self, key: &str) -> Result<Option<u64>> {
        let sent = self
            .client
            .head_object()
            .bucket(&*self.name)
            .key(key)
            .send()
            .await;
        match sent {
            Ok(head) => size_of(head.content_length(), "HeadObject").map(Some),
            Err(e) => match classify("HeadObject", e) {
                Failure::NotFound => Ok(None),
                Failure::Failed(e) => Err(e),
            },
        }
    }

    /// The object's bytes, or `range` of them (not empty), streamed as they arrive; `None`
    /// if there is no such object. Fails unless the response holds exactly the bytes asked
    /// for, or the whole object when `expected_size` is given.
    pub(crate) async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        expected_size: Option<u64>,
    ) -> Result<Option<ByteStream>> {
        let mut request = self.client.get_object().bucket(&*self.name).key(key);
        if let Some(range) = &range {
            request = request.range(format!("bytes={}-{}", range.start, range.end - 1));
        }
        let object = match request.send().await {
            Ok(object) => object,
            Err(e) => {
                return match classify("GetObject", e) {
                    Failure::NotFound => Ok(None),
                    Failure::Failed(e) => Err(e),
                };
            }
        };
        let length = size_of(object.content_length(), "GetObject")?;
        let expected = range.map(|r| r.end - r.start).or(expected_size);
        if let Some(expected) = expected
            && length != expected
        {
            return Err(RegistryError::internal(format!(
                "S3 GetObject: {length} bytes where {expected} were expected"
            )));
        }
        Ok(Some(stream_of(object.body)))
    }

    pub(crate) async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.client
            .put_object()
            .bucket(&*self.name)
            .key(key)
            .content_type(CONTENT_TYPE)
            .content_length(bytes.len() as i64)
            .body(SdkByteStream::from(bytes))
            .send()
            .await
            .map_err(failed("PutObject"))?;
        Ok(())
    }

    /// Removes an object; a missing one is not an error.
    pub(crate) async fn delete(&self, key: &str) -> Result<()> {
        let sent = self
            .client
            .delete_object()
            .bucket(&*self.name)
            .key(key)
            .send()
            .await;
        match sent.map_err(|e| classify("DeleteObject", e)) {
            Ok(_) | Err(Failure::NotFound) => Ok(()),
            Err(Failure::Failed(e)) => Err(e),
        }
    }

    /// Every key under `prefix`.
    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&*self.name)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(failed("ListObjectsV2"))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|object| object.key().map(str::to_owned)),
            );
        }
        Ok(keys)
    }

    /// Removes every object under `prefix`.
    pub(crate) async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let keys = self.list(prefix).await?;
        for batch in keys.chunks(DELETE_BATCH) {
            let objects = batch
                .iter()
                .map(|key| ObjectIdentifier::builder().key(key).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| RegistryError::internal(format!("S3 DeleteObjects: {e}")))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| RegistryError::internal(format!("S3 DeleteObjects: {e}")))?;
            let deleted = self
                .client
                .delete_objects()
                .bucket(&*self.name)
                .delete(delete)
                .send()
                .await
                .map_err(failed("DeleteObjects"))?;
            if let Some(error) = deleted.errors().first() {
                return Err(RegistryError::internal(format!(
                    "S3 DeleteObjects: {} of {} keys failed, the first with {}",
                    deleted.errors().len(),
                    batch.len(),
                    error.code().unwrap_or("no code")
                )));
            }
        }
        Ok(())
    }

    /// Writes the concatenation of `sources` to `target` in one step: readers of `target`
    /// see its old state or the whole new object, never a part. Returns `None`, having
    /// written nothing, if a source is missing.
    ///
    /// Every source but the last must be at least 5 MiB (S3's part minimum) and at most
    /// 5 GiB, the last at most one part size, and there are at most 10,000. Sources are
    /// copied inside S3, except a last one under 5 MiB: it passes through memory, since not
    /// every S3 service copies a part that small (Garage refuses to).
    pub(crate) async fn concatenate(&self, sources: &[Piece], target: &str) -> Result<Option<()>> {
        match sources {
            [] => self.put(target, Bytes::new()).await.map(Some),
            [only] => self.copy(&only.key, target).await,
            _ => self.assemble(sources, target).await,
        }
    }

    async fn copy(&self, source: &str, target: &str) -> Result<Option<()>> {
        let sent = self
            .client
            .copy_object()
            .bucket(&*self.name)
            .key(target)
            .copy_source(self.copy_source(source))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(Some(())),
            Err(e) => match classify("CopyObject", e) {
                Failure::NotFound => Ok(None),
                Failure::Failed(e) => Err(e),
            },
        }
    }

    async fn assemble(&self, sources: &[Piece], target: &str) -> Result<Option<()>> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&*self.name)
            .key(target)
            .content_type(CONTENT_TYPE)
            .send()
            .await
            .map_err(failed("CreateMultipartUpload"))?;
        let upload = Multipart {
            target: target.to_owned(),
            id: created
                .upload_id()
                .ok_or_else(|| {
                    RegistryError::internal("S3 CreateMultipartUpload: no upload id in the answer")
                })?
                .to_owned(),
            checksums: created.checksum_algorithm().is_some(),
        };
        let completed = match self.transfer_parts(sources, &upload).await {
            Ok(Some(parts)) => self.complete(&upload, parts).await.map(Some),
            other => other.map(|_| None),
        };
        if !matches!(completed, Ok(Some(()))) {
            // Parts already transferred would otherwise linger, invisible, until the
            // bucket's lifecycle rule aborts the upload.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&*self.name)
                .key(target)
                .upload_id(&upload.id)
                .send()
                .await;
        }
        completed
    }

    /// Transfers each source into part `index + 1` of the multipart upload, several at
    /// once; `None` if a source is missing.
    async fn transfer_parts(
        &self,
        sources: &[Piece],
        upload: &Multipart,
    ) -> Result<Option<Vec<CompletedPart>>> {
        // Futures that own what they use, collected before they are polled: borrowing
        // closures inside the stream would keep the port's boxed future from being `Send`.
        let transfers: Vec<_> = sources
            .iter()
            .enumerate()
            .map(|(index, source)| {
                let number = i32::try_from(index + 1).unwrap_or(i32::MAX);
                let (bucket, source, upload) = (self.clone(), source.clone(), upload.clone());
                async move { bucket.transfer_part(&source, &upload, number).await }
            })
            .collect();
        let parts: Vec<Option<CompletedPart>> = futures_util::stream::iter(transfers)
            .buffered(PART_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(parts.into_iter().collect())
    }

    async fn transfer_part(
        &self,
        source: &Piece,
        upload: &Multipart,
        number: i32,
    ) -> Result<Option<CompletedPart>> {
        if source.len < MIN_PART_SIZE as u64 {
            return self.upload_part(source, upload, number).await;
        }
        let sent = self
            .client
            .upload_part_copy()
            .bucket(&*self.name)
            .key(&upload.target)
            .upload_id(&upload.id)
            .part_number(number)
            .copy_source(self.copy_source(&source.key))
            .send()
            .await;
        let copied = match sent {
            Ok(copied) => copied,
            Err(e) => {
                return match classify("UploadPartCopy", e) {
                    Failure::NotFound => Ok(None),
                    Failure::Failed(e) => Err(e),
                };
            }
        };
        let result = copied.copy_part_result().ok_or_else(|| {
            RegistryError::internal("S3 UploadPartCopy: no copy result in the answer")
        })?;
        let mut part = CompletedPart::builder()
            .part_number(number)
            .set_e_tag(result.e_tag().map(str::to_owned));
        if upload.checksums {
            part = part
                .set_checksum_crc32(result.checksum_crc32().map(str::to_owned))
                .set_checksum_crc32_c(result.checksum_crc32_c().map(str::to_owned))
                .set_checksum_crc64_nvme(result.checksum_crc64_nvme().map(str::to_owned))
                .set_checksum_sha1(result.checksum_sha1().map(str::to_owned))
                .set_checksum_sha256(result.checksum_sha256().map(str::to_owned));
        }
        Ok(Some(part.build()))
    }

    /// Reads a (small) source and uploads its bytes as a part.
    async fn upload_part(
        &self,
        source: &Piece,
        upload: &Multipart,
        number: i32,
    ) -> Result<Option<CompletedPart>> {
        let Some(mut stream) = self.get(&source.key, None, Some(source.len)).await? else {
            return Ok(None);
        };
        let mut bytes = BytesMut::with_capacity(usize::try_from(source.len).unwrap_or(0));
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| RegistryError::unavailable(format!("S3 GetObject: {e}")))?;
            bytes.extend_from_slice(&chunk);
        }
        let uploaded = self
            .client
            .upload_part()
            .bucket(&*self.name)
            .key(&upload.target)
            .upload_id(&upload.id)
            .part_number(number)
            .content_length(bytes.len() as i64)
            .body(SdkByteStream::from(bytes.freeze()))
            .send()
            .await
            .map_err(failed("UploadPart"))?;
        let mut part = CompletedPart::builder()
            .part_number(number)
            .set_e_tag(uploaded.e_tag().map(str::to_owned));
        if upload.checksums {
            part = part
                .set_checksum_crc32(uploaded.checksum_crc32().map(str::to_owned))
                .set_checksum_crc32_c(uploaded.checksum_crc32_c().map(str::to_owned))
                .set_checksum_crc64_nvme(uploaded.checksum_crc64_nvme().map(str::to_owned))
                .set_checksum_sha1(uploaded.checksum_sha1().map(str::to_owned))
                .set_checksum_sha256(uploaded.checksum_sha256().map(str::to_owned));
        }
        Ok(Some(part.build()))
    }

    async fn complete(&self, upload: &Multipart, parts: Vec<CompletedPart>) -> Result<()> {
        let parts = CompletedMultipartUpload::builder()
            .set_parts(Some(parts))
            .build();
        self.client
            .complete_multipart_upload()
            .bucket(&*self.name)
            .key(&upload.target)
            .upload_id(&upload.id)
            .multipart_upload(parts)
            .send()
            .await
            .map_err(failed("CompleteMultipartUpload"))?;
        Ok(())
    }

    /// A URL that fetches the object with a plain GET (and `Range`) until `expiry` passes.
    pub(crate) async fn presigned_get(&self, key: &str, expiry: Duration) -> Result<String> {
        let config = PresigningConfig::expires_in(expiry)
            .map_err(|e| RegistryError::internal(format!("S3 presigning: {e}")))?;
        let request = self
            .client
            .get_object()
            .bucket(&*self.name)
            .key(key)
            .presigned(config)
            .await
            .map_err(failed("GetObject presigning"))?;
        Ok(request.uri().to_owned())
    }

    fn copy_source(&self, key: &str) -> String {
        utf8_percent_encode(&format!("{}/{key}", self.name), COPY_SOURCE).to_string()
    }
}

/// A multipart upload in progress.
#[derive(Debug, Clone)]
struct Multipart {
    target: String,
    id: String,
    /// Whether the upload was created with a checksum algorithm. Only then do the parts'
    /// checksums go back at completion: a service may answer a part with the checksum the
    /// SDK sent and still store none for an upload without one (Garage does), and then it
    /// refuses them at completion.
    checksums: bool,
}

fn size_of(length: Option<i64>, action: &str) -> Result<u64> {
    length
        .and_then(|length| u64::try_from(length).ok())
        .ok_or_else(|| {
            RegistryError::internal(format!("S3 {action}: no object size in the answer"))
        })
}

/// The SDK's body as the port's stream, chunk by chunk as the connection delivers them.
fn stream_of(body: SdkByteStream) -> ByteStream {
    Box::pin(futures_util::stream::unfold(body, |mut body| async move {
        let chunk = body.next().await?;
        Some((chunk.map_err(io::Error::other), body))
    }))
}
