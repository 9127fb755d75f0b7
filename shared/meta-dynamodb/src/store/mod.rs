//! [`DynamoMetadataStore`]: the [`MetadataStore`] port over one DynamoDB table, laid out as the
//! crate documentation describes.

mod items;

use std::collections::HashSet;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{DeleteRequest, Put, PutRequest, TransactWriteItem, WriteRequest};
use berth_core::error::{RegistryError, Result};
use berth_core::manifest::{ReferrerDescriptor, Target, referenced_blobs};
use berth_core::ports::{ManifestRecord, MetadataStore, UploadSession, all_manifests};
use berth_core::quota::charges_of;
use berth_core::{Digest, RepositoryName, Tag, UploadId};
use bytes::Bytes;

use self::items::Content;
pub(crate) use self::items::attr;
pub use self::items::{INLINE_LIMIT, PART_BYTES};
use self::items::{inline_record, referrer_of, repository_item, take_bytes, upload_item};
use crate::error::corrupt;
use crate::garbage;
use crate::schema::{
    CATALOG_PARTITION, CATALOG_SORT_KEY, MANIFEST_END, MANIFEST_PREFIX, META, PART_MARKER,
    PARTITION_KEY, SORT_KEY, TAG_END, TAG_PREFIX, blob_link_sk, build_error, manifest_sk, part_sk,
    parts_prefix, referrer_sk, referrers_prefix, repository_pk, tag_sk, upload_pk,
};
use crate::toolkit::{
    Condition, FIRST_BACKOFF, Item, Outcome, Query, TRANSACTION_BYTES, TRANSACTION_ITEMS,
    WRITE_ATTEMPTS, back_off, item_size, key, key_bound, lost_races, n, number_attr,
    optional_string_attr, s, string_attr, token,
};

/// Registry metadata in one DynamoDB table.
#[derive(Clone)]
pub struct DynamoMetadataStore {
    pub(crate) client: Client,
    pub(crate) table: String,
}

impl std::fmt::Debug for DynamoMetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoMetadataStore")
            .finish_non_exhaustive()
    }
}

impl DynamoMetadataStore {
    /// A store over the existing table `table`, reached through `client` (built once per
    /// process by the composition root). Creates nothing: see [`crate::create_table`].
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

/// The blob references a new manifest adds (see `crate::garbage`): those that fit in the
/// manifest's own transaction, and the rest, added before it (a count too high if the put
/// fails in between: a blob kept, never one lost) and taken back if the manifest turns out
/// to exist already.
#[derive(Debug)]
struct References {
    inside: Vec<Target>,
    overflow: Vec<Target>,
    overflow_added: bool,
    now_ms: u64,
    /// The project's quota charges of the manifest (`crate::quota`): in the manifest's
    /// transaction when they fit (`charge_inside`), charged before it otherwise.
    project: String,
    charges: Vec<Target>,
    charge_inside: bool,
}

/// Items of a put's transaction besides the references: manifest, tag, referrer, repository.
const PUT_ITEMS: usize = 4;

impl References {
    fn of(repository: &RepositoryName, manifest: &ManifestRecord) -> Self {
        let mut inside = referenced_blobs(&manifest.media_type, &manifest.bytes);
        let charges = charges_of(&manifest.digest, manifest.bytes.len() as u64, &inside);
        // The charges and the quota item's update, when they fit beside the put's items.
        let charge_items = charges.len() + 1;
        let charge_inside = PUT_ITEMS + charge_items <= TRANSACTION_ITEMS;
        let room = TRANSACTION_ITEMS - PUT_ITEMS - if charge_inside { charge_items } else { 0 };
        let overflow = inside.split_off(inside.len().min(room));
        Self {
            inside,
            overflow,
            overflow_added: false,
            now_ms: berth_core::gc::now_ms(),
            project: repository.project().to_owned(),
            charges,
            charge_inside,
        }
    }
}

impl DynamoMetadataStore {
    /// Adds the overflow references, once; fails if one of those blobs is being collected.
    async fn add_overflow(&self, references: &mut References) -> Result<()> {
        if references.overflow_added || references.overflow.is_empty() {
            return Ok(());
        }
        for chunk in references.overflow.chunks(TRANSACTION_ITEMS) {
            let items = self.reference_items(chunk, references.now_ms)?;
            if let Err(failed) = self.transact_checked(items).await? {
                let digest = &chunk[failed[0]].digest;
                return Err(garbage::collected_blob(digest.as_str()));
            }
        }
        references.overflow_added = true;
        Ok(())
    }

    /// Takes the overflow references back, if added: the manifest already held them.
    async fn take_back_overflow(&self, references: &mut References) -> Result<()> {
        if references.overflow_added {
            // Taken back as a deletion drops them (the blobs become candidates again).
            self.drop_references(&references.overflow).await?;
            references.overflow_added = false;
        }
        Ok(())
    }

    /// Writes `puts` (the manifest item first, on the condition that it is absent) with the
    /// references it adds and its project's quota charges, in one transaction (charges that
    /// do not fit are added before it and taken back unless it is written). `Ok(false)`:
    /// the manifest exists after all.
    async fn put_new(&self, puts: Vec<Put>, references: &mut References) -> Result<bool> {
        if references.charge_inside {
            return self.put_new_charged(puts, references).await;
        }
        self.charge(&references.project, &references.charges)
            .await?;
        let written = self.put_new_charged(puts, references).await;
        if !matches!(written, Ok(true)) {
            self.discharge(&references.project, &references.charges)
                .await?;
        }
        written
    }

    async fn put_new_charged(&self, puts: Vec<Put>, references: &mut References) -> Result<bool> {
        let written = self.put_new_attempts(puts, references).await;
        if !matches!(written, Ok(true)) {
            self.take_back_overflow(references).await?;
        }
        written
    }

    async fn put_new_attempts(&self, puts: Vec<Put>, references: &mut References) -> Result<bool> {
        self.add_overflow(references).await?;
        let head = puts.len();
        let mut delay = FIRST_BACKOFF;
        for _ in 0..WRITE_ATTEMPTS {
            let mut items: Vec<TransactWriteItem> = puts
                .iter()
                .cloned()
                .map(|put| TransactWriteItem::builder().put(put).build())
                .collect();
            items.extend(self.reference_items(&references.inside, references.now_ms)?);
            if references.charge_inside {
                // Refused here, before anything is written, when it does not fit.
                items.extend(
                    self.charge_items(&references.project, &references.charges)
                        .await?,
                );
            }
            match self.transact_checked(items).await? {
                Ok(()) => return Ok(true),
                Err(failed) if failed.contains(&0) => return Ok(false),
                Err(failed) => {
                    if let Some(blob) = failed
                        .iter()
                        .find_map(|index| references.inside.get(index.checked_sub(head)?))
                    {
                        return Err(garbage::collected_blob(blob.digest.as_str()));
                    }
                    // A charge or the usage changed since they were read: read again.
                    back_off(&mut delay).await;
                }
            }
        }
        Err(lost_races("put_manifest's quota charges"))
    }
}

/// What `put_manifest` and `delete_manifest` need to know of a stored manifest item.
#[derive(Debug)]
struct StoredManifest {
    revision: String,
    media_type: String,
    subject: Option<String>,
    /// The generation and number of its part items, for a split manifest.
    parts: Option<(String, usize)>,
}

impl DynamoMetadataStore {
    async fn write_parts(&self, pk: &str, content: &Content<'_>, generation: &str) -> Result<()> {
        let requests = content
            .part_items(pk, generation)
            .into_iter()
            .map(|item| {
                let put = PutRequest::builder().set_item(Some(item)).build();
                Ok(WriteRequest::builder()
                    .put_request(put.map_err(build_error)?)
                    .build())
            })
            .collect::<Result<Vec<_>>>()?;
        self.batch_write(requests).await
    }

    /// Removes the part items of one generation. Only called once no manifest item names
    /// that generation any more, so no reader can be assembling them.
    async fn delete_parts(&self, pk: &str, digest: &str, generation: &str, count: usize) {
        let requests = (0..count)
            .map(|index| {
                let delete = DeleteRequest::builder()
                    .set_key(Some(key(pk, part_sk(digest, generation, index))))
                    .build();
                Ok(WriteRequest::builder()
                    .delete_request(delete.map_err(build_error)?)
                    .build())
            })
            .collect::<Result<Vec<_>>>();
        // The manifest is already consistent without them: left-over parts are unreachable
        // and cost only storage.
        if let Err(e) = async { self.batch_write(requests?).await }.await {
            tracing::warn!(
                error = %e,
                digest,
                "metadata store: removing the parts of a replaced manifest failed"
            );
        }
    }

    /// The manifest item of `digest` in partition `pk`, without its bytes.
    async fn stored_manifest(&self, pk: &str, digest: &str) -> Result<Option<StoredManifest>> {
        let projection = (
            "#revision, #media_type, #subject, #parts, #generation",
            &[
                ("#revision", attr::REVISION),
                ("#media_type", attr::MEDIA_TYPE),
                ("#subject", attr::SUBJECT),
                ("#parts", attr::PARTS),
                ("#generation", attr::GENERATION),
            ][..],
        );
        let Some(item) = self
            .get(key(pk, manifest_sk(digest)), Some(projection))
            .await?
        else {
            return Ok(None);
        };
        let parts = match optional_string_attr(&item, attr::GENERATION)? {
            None => None,
            Some(generation) => {
                let count = number_attr(&item, attr::PARTS)?;
                let count = usize::try_from(count).map_err(|_| corrupt("a part count"))?;
                Some((generation.to_owned(), count))
            }
        };
        Ok(Some(StoredManifest {
            revision: string_attr(&item, attr::REVISION)?.to_owned(),
            media_type: string_attr(&item, attr::MEDIA_TYPE)?.to_owned(),
            subject: optional_string_attr(&item, attr::SUBJECT)?.map(str::to_owned),
            parts,
        }))
    }

    /// The sort keys of the tags in partition `pk` that point at `digest`. Tags are keyed by
    /// name, so this reads the repository's tag items (1 MB a request) and filters them.
    async fn tags_pointing_at(&self, pk: &str, digest: &str) -> Result<Vec<String>> {
        let mut query = Query::between(pk, TAG_PREFIX, TAG_END).keys_only();
        query.filter = Some("#digest = :digest".to_owned());
        query
            .names
            .insert("#digest".to_owned(), attr::DIGEST.to_owned());
        query.values.insert(":digest".to_owned(), s(digest));
        self.query_all(&query)
            .await?
            .iter()
            .map(|item| string_attr(item, SORT_KEY).map(str::to_owned))
            .collect()
    }

    /// The manifest `digest` in partition `pk`, read with one Query: the manifest item sorts
    /// first, and a split manifest's parts follow it.
    async fn read_manifest(&self, pk: &str, digest: &Digest) -> Result<Option<ManifestRecord>> {
        // A manifest replaced or deleted while its parts were read is read again.
        for _ in 0..WRITE_ATTEMPTS {
            let head_sk = manifest_sk(digest.as_str());
            let query = Query::prefixed(pk, &head_sk);
            let (page, next) = self.query_page(&query, None, None).await?;
            let mut page = page.into_iter();
            let head = match page.next() {
                Some(item) if string_attr(&item, SORT_KEY)? == head_sk => item,
                _ => return Ok(None),
            };
            if head.contains_key(attr::BYTES) {
                return inline_record(digest.clone(), head).map(Some);
            }
            if let Some(record) = self.assemble(&query, head, page, next, digest).await? {
                return Ok(Some(record));
            }
        }
        Err(RegistryError::unavailable(
            "metadata store: a split manifest kept changing while it was read",
        ))
    }

    /// Joins the parts of a split manifest, following the query's pages. `None` when parts
    /// are missing: the manifest was deleted or replaced while it was read.
    async fn assemble(
        &self,
        query: &Query,
        head: Item,
        mut page: std::vec::IntoIter<Item>,
        mut next: Option<Item>,
        digest: &Digest,
    ) -> Result<Option<ManifestRecord>> {
        let generation = string_attr(&head, attr::GENERATION)?;
        let count = number_attr(&head, attr::PARTS)?;
        let size = number_attr(&head, attr::SIZE)?;
        let prefix = parts_prefix(digest.as_str(), generation);
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        let mut found = 0;
        while found < count {
            for mut part in page.by_ref() {
                let sk = string_attr(&part, SORT_KEY)?;
                let Some(index) = sk.strip_prefix(&prefix) else {
                    continue;
                };
                if index.parse::<u64>().ok() != Some(found) {
                    return Ok(None);
                }
                bytes.extend(take_bytes(&mut part).ok_or_else(|| corrupt("a manifest part"))?);
                found += 1;
            }
            if found == count {
                break;
            }
            match next.take() {
                Some(start) => {
                    let (more, after) = self.query_page(query, Some(start), None).await?;
                    page = more.into_iter();
                    next = after;
                }
                None => return Ok(None),
            }
        }
        if bytes.len() as u64 != size {
            return Err(corrupt("a split manifest"));
        }
        Ok(Some(ManifestRecord {
            digest: digest.clone(),
            media_type: string_attr(&head, attr::MEDIA_TYPE)?.to_owned(),
            bytes: Bytes::from(bytes),
            referrer: referrer_of(&head)?,
        }))
    }

    /// The tag, referrer and repository items `put_manifest` writes with the manifest item.
    fn companions(
        &self,
        pk: &str,
        repository: &str,
        content: &Content<'_>,
        tag: Option<&Tag>,
    ) -> Result<Vec<Put>> {
        let mut puts = Vec::new();
        if let Some(tag) = tag {
            puts.push(self.put(content.tag_item(pk, tag_sk(tag.as_str())), None)?);
        }
        if let Some(item) = content.referrer_item(pk) {
            puts.push(self.put(item, None)?);
        }
        puts.push(self.put(repository_item(repository), None)?);
        Ok(puts)
    }

    /// `put_manifest` when the manifest may already be stored differently (another media
    /// type) or is split: read what is stored, then write on the condition that it did not
    /// change. Returns `false` when it did, to be tried again.
    async fn put_manifest_checked(
        &self,
        repository: &str,
        content: &Content<'_>,
        tag: Option<&Tag>,
        revision: &str,
        parts_written: &mut Option<String>,
        references: &mut References,
    ) -> Result<bool> {
        let pk = repository_pk(repository);
        let digest = content.digest();
        let stored = self.stored_manifest(&pk, digest).await?;

        // Parts are written before the manifest item names them. A split manifest stored
        // again reuses the parts of the stored one: the same digest means the same bytes.
        let generation = if content.inline {
            None
        } else {
            match stored.as_ref().and_then(|m| m.parts.as_ref()) {
                Some((generation, count)) if *count == content.part_count() => {
                    Some(generation.clone())
                }
                _ => {
                    if parts_written.is_none() {
                        self.write_parts(&pk, content, revision).await?;
                        *parts_written = Some(revision.to_owned());
                    }
                    parts_written.clone()
                }
            }
        };

        let condition = match &stored {
            Some(stored) => Condition::new(
                "#revision = :revision",
                &[("#revision", attr::REVISION)],
                vec![(":revision", s(&stored.revision))],
            ),
            None => Condition::absent(),
        };
        let mut puts = vec![self.put(
            content.manifest_item(&pk, revision, generation.as_deref()),
            Some(condition),
        )?];
        puts.extend(self.companions(&pk, repository, content, tag)?);
        if stored.is_none() {
            // New here: it adds its references, in the same transaction.
            let written = self.put_new(puts, references).await?;
            if written
                && let Some(ours) = parts_written.as_ref()
                && generation.as_ref() != Some(ours)
            {
                self.delete_parts(&pk, digest, ours, content.part_count())
                    .await;
            }
            return Ok(written);
        }
        self.take_back_overflow(references).await?;

        // Tags hold a copy of what they serve: when the media type changed, every tag that
        // points at this manifest is rewritten too, in the same transaction as far as it
        // holds them.
        let mut overflow = Vec::new();
        let mut budget =
            TRANSACTION_BYTES.saturating_sub(puts.iter().map(|put| item_size(&put.item)).sum());
        if stored
            .as_ref()
            .is_some_and(|stored| stored.media_type != content.record.media_type)
        {
            let own = tag.map(|tag| tag_sk(tag.as_str()));
            for sk in self.tags_pointing_at(&pk, digest).await? {
                if own.as_ref() == Some(&sk) {
                    continue;
                }
                let put = self.put(
                    content.tag_item(&pk, sk),
                    Some(Condition::points_at(digest)),
                )?;
                let size = item_size(&put.item);
                if puts.len() < TRANSACTION_ITEMS && size <= budget {
                    budget -= size;
                    puts.push(put);
                } else {
                    overflow.push(put);
                }
            }
        }

        let items = puts
            .into_iter()
            .map(|put| TransactWriteItem::builder().put(put).build())
            .collect();
        if let Outcome::ConditionFailed = self.transact(items).await? {
            return Ok(false);
        }
        // More tags than one transaction holds: the rest follow, each only if it still
        // points at this manifest. Until then they serve the previous media type.
        for put in overflow {
            self.put_item(put).await?;
        }
        if let Some((old, count)) = stored.and_then(|stored| stored.parts)
            && generation.as_ref() != Some(&old)
        {
            self.delete_parts(&pk, digest, &old, count).await;
        }
        if let Some(ours) = parts_written.as_ref()
            && generation.as_ref() != Some(ours)
        {
            self.delete_parts(&pk, digest, ours, content.part_count())
                .await;
        }
        Ok(true)
    }
}

// --- the port --------------------------------------------------------------------------------

#[async_trait]
impl MetadataStore for DynamoMetadataStore {
    async fn manifest(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<ManifestRecord>> {
        self.read_manifest(&repository_pk(repository.as_str()), digest)
            .await
    }

    async fn tagged_manifest(
        &self,
        repository: &RepositoryName,
        tag: &Tag,
    ) -> Result<Option<ManifestRecord>> {
        let pk = repository_pk(repository.as_str());
        let Some(item) = self.get(key(&pk, tag_sk(tag.as_str())), None).await? else {
            return Ok(None);
        };
        let digest: Digest = string_attr(&item, attr::DIGEST)?
            .parse()
            .map_err(|_| corrupt("a tag's digest"))?;
        if item.contains_key(attr::BYTES) {
            return inline_record(digest, item).map(Some);
        }
        self.read_manifest(&pk, &digest).await
    }

    async fn manifests_present(
        &self,
        repository: &RepositoryName,
        digests: &[Digest],
    ) -> Result<Vec<bool>> {
        let sort_keys: Vec<String> = digests.iter().map(|d| manifest_sk(d.as_str())).collect();
        let distinct: Vec<String> = sort_keys
            .iter()
            .collect::<HashSet<_>>()
            .into_iter()
            .cloned()
            .collect();
        let found = self
            .batch_get(&repository_pk(repository.as_str()), &distinct, &[])
            .await?;
        Ok(sort_keys.iter().map(|sk| found.contains_key(sk)).collect())
    }

    async fn put_manifest(
        &self,
        repository: &RepositoryName,
        manifest: &ManifestRecord,
        tag: Option<&Tag>,
    ) -> Result<()> {
        let content = Content::new(manifest)?;
        let mut references = References::of(repository, manifest);
        let repository = repository.as_str();
        let pk = repository_pk(repository);
        // Every write of the manifest item gets a new revision, so that a concurrent
        // delete_manifest notices that tags may have been added.
        let revision = token();
        let mut parts_written = None;
        let mut delay = FIRST_BACKOFF;

        if content.inline {
            // The common case: a new manifest with its references, its quota charged first
            // (read first, so that pushing a stored manifest again charges nothing).
            if self.stored_manifest(&pk, content.digest()).await?.is_none() {
                let mut puts = vec![self.put(
                    content.manifest_item(&pk, &revision, None),
                    Some(Condition::absent()),
                )?];
                puts.extend(self.companions(&pk, repository, &content, tag)?);
                if self.put_new(puts, &mut references).await? {
                    return Ok(());
                }
            }
            // Stored already, so counted already: written again unless it is stored with
            // another media type, which would leave its tags' copies stale (or was deleted
            // meanwhile: then it is new again, below).
            let condition = Condition::new(
                "#media_type = :media_type",
                &[("#media_type", attr::MEDIA_TYPE)],
                vec![(":media_type", s(&manifest.media_type))],
            );
            let mut puts =
                vec![self.put(content.manifest_item(&pk, &revision, None), Some(condition))?];
            puts.extend(self.companions(&pk, repository, &content, tag)?);
            let items = puts
                .into_iter()
                .map(|put| TransactWriteItem::builder().put(put).build())
                .collect();
            if let Outcome::Committed = self.transact(items).await? {
                return Ok(());
            }
        }
        for _ in 0..WRITE_ATTEMPTS {
            if self
                .put_manifest_checked(
                    repository,
                    &content,
                    tag,
                    &revision,
                    &mut parts_written,
                    &mut references,
                )
                .await?
            {
                return Ok(());
            }
            back_off(&mut delay).await;
        }
        Err(lost_races("put_manifest"))
    }

    async fn delete_manifest(&self, repository: &RepositoryName, digest: &Digest) -> Result<bool> {
        let pk = repository_pk(repository.as_str());
        let digest = digest.as_str();
        let mut delay = FIRST_BACKOFF;
        for _ in 0..WRITE_ATTEMPTS {
            let Some(stored) = self.stored_manifest(&pk, digest).await? else {
                return Ok(false);
            };
            let parsed: Digest = digest.parse().map_err(|_| corrupt("a manifest's digest"))?;
            let (blobs, charged) = match self.read_manifest(&pk, &parsed).await? {
                Some(record) => {
                    let blobs = referenced_blobs(&record.media_type, &record.bytes);
                    let charged = charges_of(&record.digest, record.bytes.len() as u64, &blobs);
                    (blobs, charged)
                }
                None => return Ok(false),
            };
            let tags = self.tags_pointing_at(&pk, digest).await?;
            // The manifest item is removed only if no put_manifest rewrote it since it was
            // read (a put may have added a tag), each tag only if it still points here.
            let mut deletes = vec![self.delete(
                key(&pk, manifest_sk(digest)),
                Some(Condition::new(
                    "#revision = :revision",
                    &[("#revision", attr::REVISION)],
                    vec![(":revision", s(&stored.revision))],
                )),
            )?];
            if let Some(subject) = &stored.subject {
                deletes.push(self.delete(key(&pk, referrer_sk(subject, digest)), None)?);
            }
            let mut overflow = Vec::new();
            for sk in tags {
                let delete = self.delete(key(&pk, sk), Some(Condition::points_at(digest)))?;
                if deletes.len() < TRANSACTION_ITEMS {
                    deletes.push(delete);
                } else {
                    overflow.push(delete);
                }
            }
            let items = deletes
                .into_iter()
                .map(|delete| TransactWriteItem::builder().delete(delete).build())
                .collect();
            match self.transact(items).await? {
                Outcome::ConditionFailed => back_off(&mut delay).await,
                Outcome::Committed => {
                    // Its references and quota charges go after it: a crash between leaves
                    // them too high.
                    self.drop_references(&blobs).await?;
                    self.discharge(repository.project(), &charged).await?;
                    for delete in overflow {
                        self.delete_item(delete).await?;
                    }
                    if let Some((generation, count)) = &stored.parts {
                        self.delete_parts(&pk, digest, generation, *count).await;
                    }
                    return Ok(true);
                }
            }
        }
        Err(lost_races("delete_manifest"))
    }

    async fn delete_tag(&self, repository: &RepositoryName, tag: &Tag) -> Result<bool> {
        let pk = repository_pk(repository.as_str());
        let delete = self.delete(key(pk, tag_sk(tag.as_str())), Some(Condition::exists()))?;
        self.delete_item(delete).await
    }

    async fn tags(
        &self,
        repository: &RepositoryName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let low = format!("{TAG_PREFIX}{}", key_bound(after.unwrap_or("")));
        let query = Query::between(&repository_pk(repository.as_str()), &low, TAG_END).keys_only();
        self.list(&query, after, limit, |item| {
            let sk = string_attr(item, SORT_KEY)?;
            sk.strip_prefix(TAG_PREFIX)
                .map(str::to_owned)
                .ok_or_else(|| corrupt("a tag's key"))
        })
        .await
    }

    async fn tag_targets(
        &self,
        repository: &RepositoryName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Digest)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let low = format!("{TAG_PREFIX}{}", key_bound(after.unwrap_or("")));
        let mut query = Query::between(&repository_pk(repository.as_str()), &low, TAG_END);
        query.projection = Some("#sk, #digest".to_owned());
        query
            .names
            .insert("#digest".to_owned(), attr::DIGEST.to_owned());
        self.list_entries(&query, after, limit, |item| {
            let tag = string_attr(item, SORT_KEY)?
                .strip_prefix(TAG_PREFIX)
                .ok_or_else(|| corrupt("a tag's key"))?;
            let digest: Digest = string_attr(item, attr::DIGEST)?
                .parse()
                .map_err(|_| corrupt("a tag's digest"))?;
            Ok(Some((tag.to_owned(), (tag.to_owned(), digest))))
        })
        .await
    }

    async fn manifests_page(
        &self,
        repository: &RepositoryName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ManifestRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let pk = repository_pk(repository.as_str());
        let low = manifest_sk(key_bound(after.unwrap_or("")));
        let query = Query::between(&pk, &low, MANIFEST_END);
        // Part items sort among the manifest items: they are skipped, and a split manifest
        // is read whole afterwards.
        let heads: Vec<(Digest, Option<ManifestRecord>)> = self
            .list_entries(&query, after, limit, |item| {
                let sk = string_attr(item, SORT_KEY)?;
                let Some(digest) = sk.strip_prefix(MANIFEST_PREFIX) else {
                    return Ok(None);
                };
                if digest.contains(PART_MARKER) {
                    return Ok(None);
                }
                let parsed: Digest = digest.parse().map_err(|_| corrupt("a manifest's key"))?;
                let inline = if item.contains_key(attr::BYTES) {
                    Some(inline_record(parsed.clone(), item.clone())?)
                } else {
                    None
                };
                Ok(Some((digest.to_owned(), (parsed, inline))))
            })
            .await?;
        let mut records = Vec::with_capacity(heads.len());
        for (digest, inline) in heads {
            match inline {
                Some(record) => records.push(record),
                None => records.extend(self.read_manifest(&pk, &digest).await?),
            }
        }
        Ok(records)
    }

    async fn delete_repository(&self, repository: &RepositoryName) -> Result<bool> {
        let pk = repository_pk(repository.as_str());
        let manifests = all_manifests(self, repository).await?;
        let mut blobs: Vec<Target> = Vec::new();
        let mut charged: Vec<Target> = Vec::new();
        for manifest in &manifests {
            let referenced = referenced_blobs(&manifest.media_type, &manifest.bytes);
            charged.extend(charges_of(
                &manifest.digest,
                manifest.bytes.len() as u64,
                &referenced,
            ));
            blobs.extend(referenced);
        }
        // Everything but the repository item goes first, so that a removal cut short leaves
        // the repository listed and the next call finishes it; the references of its
        // manifests after them (a crash between leaves them too high).
        let items = self.query_all(&Query::partition(&pk).keys_only()).await?;
        let requests = items
            .iter()
            .map(|item| string_attr(item, SORT_KEY))
            .filter(|sk| !matches!(sk, Ok(META)))
            .map(|sk| {
                let delete = DeleteRequest::builder()
                    .set_key(Some(key(&pk, sk?)))
                    .build()
                    .map_err(build_error)?;
                Ok(WriteRequest::builder().delete_request(delete).build())
            })
            .collect::<Result<Vec<_>>>()?;
        self.batch_write(requests).await?;
        self.drop_references(&blobs).await?;
        self.discharge_each(repository.project(), &charged).await?;
        let delete = self.delete(key(&pk, META), Some(Condition::exists()))?;
        self.delete_item(delete).await
    }

    async fn repositories(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let query = Query::catalog(CATALOG_PARTITION, after);
        self.list(&query, after, limit, |item| {
            string_attr(item, CATALOG_SORT_KEY).map(str::to_owned)
        })
        .await
    }

    async fn repository_exists(&self, repository: &RepositoryName) -> Result<bool> {
        let key = key(repository_pk(repository.as_str()), META);
        let found = self
            .get(key, Some(("#pk", &[("#pk", PARTITION_KEY)])))
            .await?;
        Ok(found.is_some())
    }

    async fn referrers(
        &self,
        repository: &RepositoryName,
        subject: &Digest,
    ) -> Result<Vec<ReferrerDescriptor>> {
        let pk = repository_pk(repository.as_str());
        let query = Query::prefixed(&pk, &referrers_prefix(subject.as_str()));
        self.query_all(&query)
            .await?
            .iter()
            .map(|item| {
                serde_json::from_str(string_attr(item, attr::REFERRER)?)
                    .map_err(|_| corrupt("a referrer descriptor"))
            })
            .collect()
    }

    async fn link_blob(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        let repository = repository.as_str();
        let mut link = key(repository_pk(repository), blob_link_sk(digest.as_str()));
        link.insert(attr::SIZE.to_owned(), n(size));
        let items = vec![
            TransactWriteItem::builder()
                .put(self.put(repository_item(repository), None)?)
                .build(),
            TransactWriteItem::builder()
                .put(self.put(link, None)?)
                .build(),
        ];
        match self.transact(items).await? {
            Outcome::Committed => Ok(()),
            Outcome::ConditionFailed => Err(RegistryError::internal(
                "DynamoDB refused an unconditional write on a condition",
            )),
        }
    }

    async fn blob_links(
        &self,
        repository: &RepositoryName,
        digests: &[Digest],
    ) -> Result<Vec<Option<u64>>> {
        let sort_keys: Vec<String> = digests.iter().map(|d| blob_link_sk(d.as_str())).collect();
        let distinct: Vec<String> = sort_keys
            .iter()
            .collect::<HashSet<_>>()
            .into_iter()
            .cloned()
            .collect();
        // The links and the blobs' records in one read: a link to a blob garbage
        // collection deleted (or is deleting) stays until its repository goes, unserved.
        let pk = repository_pk(repository.as_str());
        let mut keys: Vec<Item> = distinct.iter().map(|sk| key(&pk, sk.as_str())).collect();
        let digests_of: HashSet<&str> = digests.iter().map(Digest::as_str).collect();
        keys.extend(digests_of.iter().map(|digest| garbage::record_key(digest)));
        let mut links = std::collections::HashMap::new();
        let mut records = std::collections::HashMap::new();
        for item in self.batch_get_items(keys).await? {
            let (pk_found, sk) = (
                string_attr(&item, PARTITION_KEY)?,
                string_attr(&item, SORT_KEY)?,
            );
            if pk_found == pk {
                links.insert(sk.to_owned(), number_attr(&item, attr::SIZE)?);
            } else {
                records.insert(pk_found.to_owned(), item);
            }
        }
        Ok(digests
            .iter()
            .zip(&sort_keys)
            .map(|(digest, sk)| {
                let record = records.get(&garbage::blob_pk(digest.as_str()));
                links.get(sk).copied().filter(|_| garbage::servable(record))
            })
            .collect())
    }

    async fn unlink_blob(&self, repository: &RepositoryName, digest: &Digest) -> Result<bool> {
        let key = key(
            repository_pk(repository.as_str()),
            blob_link_sk(digest.as_str()),
        );
        let delete = self.delete(key, Some(Condition::exists()))?;
        self.delete_item(delete).await
    }

    async fn create_upload(&self, session: &UploadSession) -> Result<()> {
        let put = self.put(upload_item(session)?, None)?;
        self.put_item(put).await.map(drop)
    }

    async fn upload(&self, id: &UploadId) -> Result<Option<UploadSession>> {
        let Some(item) = self.get(key(upload_pk(id.as_str()), META), None).await? else {
            return Ok(None);
        };
        serde_json::from_str(string_attr(&item, attr::SESSION)?)
            .map(Some)
            .map_err(|_| corrupt("an upload session"))
    }

    async fn update_upload(&self, session: &UploadSession, expected_size: u64) -> Result<bool> {
        // A missing session fails the comparison too, so nothing is created.
        let condition = Condition::new(
            "#size = :expected",
            &[("#size", attr::SIZE)],
            vec![(":expected", n(expected_size))],
        );
        let put = self.put(upload_item(session)?, Some(condition))?;
        self.put_item(put).await
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<()> {
        let delete = self.delete(key(upload_pk(id.as_str()), META), None)?;
        self.delete_item(delete).await.map(drop)
    }
}
