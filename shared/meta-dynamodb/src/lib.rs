//! Berth's registry metadata in one DynamoDB table: [`DynamoMetadataStore`] implements the
//! `MetadataStore` port, and [`create_table`] creates the table for `berth init` and tests.
//!
//! The items are those of the embedded redb store (`berth-store-local`, whose semantics this
//! adapter mirrors), and every adapter passes the same conformance suite.
//!
//! # Key schema
//!
//! One table, partition key `PK` and sort key `SK`, both strings; one sparse global secondary
//! index `catalog` (`CatalogPK` / `CatalogSK`, keys only); time to live on `expires_at`.
//! [`CLOUDFORMATION_TABLE`] is the same table as a template resource.
//!
//! | item                 | `PK`           | `SK`                                   | other attributes                                                      |
//! |----------------------|----------------|----------------------------------------|-----------------------------------------------------------------------|
//! | repository           | `REPO#<name>`  | `META`                                 | `CatalogPK` = `REPOS`, `CatalogSK` = `<name>`                         |
//! | tag                  | `REPO#<name>`  | `TAG#<tag>`                            | `digest`, `media_type`, `size`, `bytes` or `parts`, `subject`, `referrer` |
//! | manifest             | `REPO#<name>`  | `MANIFEST#<digest>`                    | `media_type`, `size`, `bytes` or `parts` + `generation`, `subject`, `referrer`, `revision` |
//! | manifest part        | `REPO#<name>`  | `MANIFEST#<digest>#PART#<generation>#<nnnn>` | `bytes`                                                         |
//! | referrer             | `REPO#<name>`  | `REFERRER#<subject>#<digest>`          | `referrer` (the descriptor as JSON)                                   |
//! | blob link            | `REPO#<name>`  | `BLOB#<digest>`                        | `size`                                                                |
//! | upload session       | `UPLOAD#<id>`  | `META`                                 | `size`, `session` (JSON), `expires_at`                                |
//!
//! Projects, members, users and robots (DESIGN.md) will live in `PROJECT#`, `USER#` and
//! `ROBOT#` partitions; a global `BLOB#<digest>` partition is left for garbage collection.
//!
//! Why these keys:
//!
//! - **A repository is one partition**, so tags, manifests, referrers and links are read with
//!   key lookups and range queries, and every multi-item write stays inside it. The partition
//!   key is compared whole, so repository `a` never sees the items of `a/b` or `a-b`.
//! - **Tags sort by key**: a tag listing is a Query of `SK BETWEEN "TAG#<after>" AND "TAG$"`
//!   (`$` follows `#`), in DynamoDB's byte-wise order, the order the port promises.
//! - **The catalog is a sparse index**: only repository items carry `CatalogPK`, all with the
//!   same value, so one index partition lists every repository in name order. The repository
//!   item is rewritten with every push, but an index is only written when its keys change, so
//!   the index partition sees one write per new repository, not one per push. It is eventually
//!   consistent: a new repository can be missing from the catalog for a moment.
//! - **A tag holds what serving it needs**: digest, media type, referrer and, up to
//!   [`INLINE_LIMIT`] bytes (with media type and descriptor), the manifest bytes, so a pull by
//!   tag is one `GetItem`. Manifests are immutable per digest, so the copy only changes when
//!   the tag moves (the tag item is rewritten whole) or when the same bytes are pushed again
//!   under another media type (every tag pointing at the digest is rewritten in the same
//!   transaction). Deleting a manifest deletes its tags.
//! - **Large manifests are split**: items are limited to 400 KB and manifests to 4 MiB. Above
//!   the inline limit the bytes go to part items of [`PART_BYTES`] that sort right after the
//!   manifest item, so reading by digest is still one Query (following its 1 MB pages), and a
//!   tag of a split manifest costs one more request. Parts are written before the manifest
//!   item that names them, under a `generation` of their own, and removed only once no
//!   manifest item names that generation, so a reader never finds a manifest without its
//!   parts. Pushing a split manifest again reuses the stored parts.
//! - **Writes that must agree are transactions**: a push writes manifest, tag, referrer and
//!   repository items in one `TransactWriteItems`. A delete finds the manifest's tags by
//!   reading the repository's tag items with a filter on `digest`, then removes manifest,
//!   referrer and tags in one transaction, on the condition that the manifest's `revision`
//!   (new with every push) is unchanged and each tag still points at it; a push that raced in
//!   makes the delete start over. A reverse index (tags listed on the manifest item) would make
//!   deletes cheaper but every tag move a read-modify-write of two manifests; pushes are the
//!   hot path, deletes are rare.
//! - **Upload offsets advance by condition**: `update_upload` is a `PutItem` on the condition
//!   that the stored `size` is the expected one; a missing item fails it too.
//!
//! Reads are strongly consistent (a pull right after a push must find the manifest), except
//! the catalog, which reads an index.
//!
//! # Requests per operation
//!
//! | method              | DynamoDB requests                                                              |
//! |---------------------|--------------------------------------------------------------------------------|
//! | `tagged_manifest`   | 1 `GetItem`; a split manifest adds 1 `Query` (one per MB of manifest)          |
//! | `manifest`          | 1 `Query` (one per MB of manifest)                                             |
//! | `manifests_present` | ⌈distinct digests / 100⌉ `BatchGetItem`, in parallel, plus retries of unprocessed keys |
//! | `blob_links`        | the same                                                                        |
//! | `put_manifest`      | 1 `TransactWriteItems`; when stored with another media type: + 1 `GetItem`, 1+ `Query` of the tags, 1 `TransactWriteItems`; a split manifest: 1 `GetItem`, 1 `BatchWriteItem` of the parts (unless stored already), 1 `TransactWriteItems` |
//! | `delete_manifest`   | 1 `GetItem`, 1+ `Query` (the repository's tags, 1 MB a page), 1 `TransactWriteItems`; a split manifest adds 1 `BatchWriteItem` |
//! | `delete_tag`, `unlink_blob` | 1 conditional `DeleteItem`                                              |
//! | `tags`, `repositories` | 1 `Query` per page (`limit` items or 1 MB)                                  |
//! | `repository_exists`, `upload` | 1 `GetItem`                                                           |
//! | `referrers`         | 1 `Query` per MB of descriptors                                                |
//! | `link_blob`         | 1 `TransactWriteItems` (repository and link items)                             |
//! | `create_upload`, `update_upload`, `delete_upload` | 1 `PutItem` / conditional `PutItem` / `DeleteItem` |
//!
//! Transactions cancelled by a conflicting transaction or throttling are tried again with
//! back-off; writes that lose a race (a condition failed) start over, both up to a bound
//! after which the call is `UNAVAILABLE`.
//!
//! # Errors
//!
//! Throttling, timeouts, connection failures and 5xx answers are `UNAVAILABLE` (503, the
//! client may retry); anything else is an internal error. The client sees only a generic
//! message; the cause, which may name the table or the endpoint, is for the log.

mod error;
mod schema;
mod store;

pub use schema::{
    CATALOG_INDEX, CATALOG_PARTITION_KEY, CATALOG_SORT_KEY, CLOUDFORMATION_TABLE, PARTITION_KEY,
    SORT_KEY, TTL_ATTRIBUTE, create_table,
};
pub use store::{DynamoMetadataStore, INLINE_LIMIT, PART_BYTES};
