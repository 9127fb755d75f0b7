//! How registry records are stored as items: manifests (inline or split into parts) and the
//! tag, referrer and repository items that go with them, and upload sessions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use berth_core::Digest;
use berth_core::error::{ErrorCode, RegistryError, Result};
use berth_core::manifest::ReferrerDescriptor;
use berth_core::ports::{ManifestRecord, UploadSession};
use bytes::Bytes;

use crate::error::corrupt;
use crate::schema::{
    CATALOG_PARTITION, CATALOG_PARTITION_KEY, CATALOG_SORT_KEY, META, TTL_ATTRIBUTE, manifest_sk,
    part_sk, referrer_sk, repository_pk, upload_pk,
};
use crate::toolkit::{Condition, Item, key, n, optional_string_attr, s, string_attr};

/// Manifest bytes plus media type plus referrer descriptor up to this size live inline in
/// the manifest and tag items; larger manifests are split into parts. DynamoDB items are
/// limited to 400 KB, keys and attribute names included.
pub const INLINE_LIMIT: usize = 300 * 1024;
/// The manifest bytes one part item holds.
pub const PART_BYTES: usize = 350 * 1024;
/// Upload sessions untouched for this long are removed by DynamoDB's time to live.
const UPLOAD_IDLE_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Attribute names, besides the keys in [`crate::schema`].
pub(crate) mod attr {
    pub const DIGEST: &str = "digest";
    pub const MEDIA_TYPE: &str = "media_type";
    pub const SIZE: &str = "size";
    pub const BYTES: &str = "bytes";
    pub const PARTS: &str = "parts";
    pub const GENERATION: &str = "generation";
    pub const REVISION: &str = "revision";
    pub const SUBJECT: &str = "subject";
    pub const REFERRER: &str = "referrer";
    pub const SESSION: &str = "session";
}

impl Condition {
    /// The tag item still points at `digest`.
    pub(super) fn points_at(digest: &str) -> Self {
        Self::new(
            "#digest = :digest",
            &[("#digest", attr::DIGEST)],
            vec![(":digest", s(digest))],
        )
    }
}

/// A manifest as `put_manifest` writes it.
pub(super) struct Content<'a> {
    pub(super) record: &'a ManifestRecord,
    /// The subject's digest and the referrer descriptor as JSON.
    referrer: Option<(String, String)>,
    /// Whether the bytes fit in the manifest and tag items.
    pub(super) inline: bool,
}

impl<'a> Content<'a> {
    pub(super) fn new(record: &'a ManifestRecord) -> Result<Self> {
        let referrer = match &record.referrer {
            None => None,
            Some((subject, descriptor)) => {
                let json = serde_json::to_string(descriptor).map_err(RegistryError::internal)?;
                Some((subject.to_string(), json))
            }
        };
        let described = record.media_type.len() + referrer.as_ref().map_or(0, |(_, j)| j.len());
        if described > INLINE_LIMIT {
            return Err(RegistryError::new(
                ErrorCode::ManifestInvalid,
                "the manifest's media type and annotations are too large to index",
            ));
        }
        Ok(Self {
            record,
            inline: described + record.bytes.len() <= INLINE_LIMIT,
            referrer,
        })
    }

    pub(super) fn digest(&self) -> &str {
        self.record.digest.as_str()
    }

    pub(super) fn part_count(&self) -> usize {
        self.record.bytes.len().div_ceil(PART_BYTES)
    }

    /// What the manifest item and a tag item share: how to serve the manifest.
    fn describe(&self, item: &mut Item) {
        item.insert(attr::MEDIA_TYPE.to_owned(), s(&self.record.media_type));
        item.insert(attr::SIZE.to_owned(), n(self.record.bytes.len() as u64));
        if let Some((subject, json)) = &self.referrer {
            item.insert(attr::SUBJECT.to_owned(), s(subject));
            item.insert(attr::REFERRER.to_owned(), s(json));
        }
        if self.inline {
            item.insert(
                attr::BYTES.to_owned(),
                AttributeValue::B(Blob::new(self.record.bytes.to_vec())),
            );
        } else {
            item.insert(attr::PARTS.to_owned(), n(self.part_count() as u64));
        }
    }

    /// The manifest item. `generation` names the part items, for a split manifest.
    pub(super) fn manifest_item(&self, pk: &str, revision: &str, generation: Option<&str>) -> Item {
        let mut item = key(pk, manifest_sk(self.digest()));
        self.describe(&mut item);
        item.insert(attr::REVISION.to_owned(), s(revision));
        if let Some(generation) = generation {
            item.insert(attr::GENERATION.to_owned(), s(generation));
        }
        item
    }

    pub(super) fn tag_item(&self, pk: &str, tag_sk: String) -> Item {
        let mut item = key(pk, tag_sk);
        self.describe(&mut item);
        item.insert(attr::DIGEST.to_owned(), s(self.digest()));
        item
    }

    pub(super) fn referrer_item(&self, pk: &str) -> Option<Item> {
        let (subject, json) = self.referrer.as_ref()?;
        let mut item = key(pk, referrer_sk(subject, self.digest()));
        item.insert(attr::REFERRER.to_owned(), s(json));
        Some(item)
    }

    pub(super) fn part_items(&self, pk: &str, generation: &str) -> Vec<Item> {
        self.record
            .bytes
            .chunks(PART_BYTES)
            .enumerate()
            .map(|(index, chunk)| {
                let mut item = key(pk, part_sk(self.digest(), generation, index));
                item.insert(
                    attr::BYTES.to_owned(),
                    AttributeValue::B(Blob::new(chunk.to_vec())),
                );
                item
            })
            .collect()
    }
}

/// The repository item: it exists once anything was stored in the repository, and puts the
/// repository in the catalog index.
pub(super) fn repository_item(repository: &str) -> Item {
    let mut item = key(repository_pk(repository), META);
    item.insert(CATALOG_PARTITION_KEY.to_owned(), s(CATALOG_PARTITION));
    item.insert(CATALOG_SORT_KEY.to_owned(), s(repository));
    item
}

/// A manifest or tag item that holds the bytes, as a record.
pub(super) fn inline_record(digest: Digest, mut item: Item) -> Result<ManifestRecord> {
    let bytes = take_bytes(&mut item).ok_or_else(|| corrupt("a manifest's bytes"))?;
    Ok(ManifestRecord {
        digest,
        media_type: string_attr(&item, attr::MEDIA_TYPE)?.to_owned(),
        bytes: Bytes::from(bytes),
        referrer: referrer_of(&item)?,
    })
}

pub(super) fn referrer_of(item: &Item) -> Result<Option<(Digest, ReferrerDescriptor)>> {
    let Some(subject) = optional_string_attr(item, attr::SUBJECT)? else {
        return Ok(None);
    };
    let subject = subject
        .parse()
        .map_err(|_| corrupt("a manifest's subject"))?;
    let descriptor = serde_json::from_str(string_attr(item, attr::REFERRER)?)
        .map_err(|_| corrupt("a referrer descriptor"))?;
    Ok(Some((subject, descriptor)))
}

pub(super) fn take_bytes(item: &mut Item) -> Option<Vec<u8>> {
    match item.remove(attr::BYTES) {
        Some(AttributeValue::B(blob)) => Some(blob.into_inner()),
        _ => None,
    }
}

/// An upload session's item: the size its conditional update compares, the session as JSON,
/// and its expiry, renewed by every write.
pub(super) fn upload_item(session: &UploadSession) -> Result<Item> {
    let json = serde_json::to_string(session).map_err(RegistryError::internal)?;
    let mut item = key(upload_pk(session.staged.id.as_str()), META);
    item.insert(attr::SIZE.to_owned(), n(session.staged.size));
    item.insert(attr::SESSION.to_owned(), s(json));
    item.insert(
        TTL_ATTRIBUTE.to_owned(),
        n(unix_now() + UPLOAD_IDLE_EXPIRY.as_secs()),
    );
    Ok(item)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use berth_core::{Algorithm, UploadId};

    use super::*;
    use crate::schema::tag_sk;
    use crate::toolkit::number_attr;

    fn record(len: usize, referrer_annotation: Option<usize>) -> ManifestRecord {
        let bytes = vec![b'x'; len];
        let digest = Digest::of(Algorithm::Sha256, &bytes);
        let referrer = referrer_annotation.map(|annotation| {
            let descriptor = ReferrerDescriptor {
                media_type: "application/vnd.oci.image.manifest.v1+json".to_owned(),
                digest: digest.clone(),
                size: len as u64,
                artifact_type: None,
                annotations: [("a".to_owned(), "v".repeat(annotation))].into(),
            };
            (Digest::of(Algorithm::Sha256, b"subject"), descriptor)
        });
        ManifestRecord {
            digest,
            media_type: "application/vnd.oci.image.manifest.v1+json".to_owned(),
            bytes: Bytes::from(bytes),
            referrer,
        }
    }

    #[test]
    fn small_manifests_are_inline_and_large_ones_split() {
        let small = record(4096, Some(100));
        let content = Content::new(&small).expect("content");
        assert!(content.inline);
        let item = content.tag_item("REPO#r", tag_sk("t"));
        assert!(item.contains_key(attr::BYTES) && item.contains_key(attr::REFERRER));

        let large = record(INLINE_LIMIT, None);
        let content = Content::new(&large).expect("content");
        assert!(!content.inline, "the media type counts too");
        assert_eq!(content.part_count(), 1);
        let item = content.tag_item("REPO#r", tag_sk("t"));
        assert!(!item.contains_key(attr::BYTES) && item.contains_key(attr::PARTS));
        let parts = content.part_items("REPO#r", "g");
        assert_eq!(parts.len(), 1);

        let four_mib = record(4 * 1024 * 1024, None);
        let content = Content::new(&four_mib).expect("content");
        let parts = content.part_items("REPO#r", "g");
        assert_eq!(parts.len(), content.part_count());
        assert_eq!(parts.len(), 12);
    }

    #[test]
    fn descriptors_too_large_to_index_are_refused() {
        let absurd = record(10, Some(INLINE_LIMIT));
        let err = Content::new(&absurd).err().expect("refused");
        assert_eq!(err.code(), ErrorCode::ManifestInvalid);
    }

    #[test]
    fn upload_items_expire_after_their_last_write() {
        let session = UploadSession {
            repository: "r".parse().expect("a name"),
            staged: berth_core::ports::StagedUpload {
                id: UploadId::generate(),
                size: 42,
                backend: Vec::new(),
            },
            hash: berth_core::digest::DigestHasher::new(Algorithm::Sha256).save(),
            started_at: 1_700_000_000,
        };
        let item = upload_item(&session).expect("item");
        assert_eq!(number_attr(&item, attr::SIZE).expect("size"), 42);
        assert!(number_attr(&item, TTL_ATTRIBUTE).expect("ttl") > unix_now());
    }
}
