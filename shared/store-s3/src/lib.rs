//! [`S3BlobStore`]: blob bytes and upload staging in an S3 bucket, on AWS or on any
//! S3-compatible service (MinIO, Garage, Ceph RGW, R2).
//!
//! ```text
//! <prefix>blobs/<algorithm>/<first two hex>/<hex>     published blobs, never written in place
//! <prefix>uploads/<upload id>/part-<n>-<writer>       full parts of an upload, in order
//! <prefix>uploads/<upload id>/tail-<end>-<writer>     the bytes after the last full part
//! ```
//!
//! An upload is staged as plain objects: full parts of a fixed size (8 MiB by default, never
//! below S3's 5 MiB part minimum) and one shorter tail. Every append writes its parts and its
//! tail under names of its own (a random `writer`), so two racing appends never touch each
//! other's objects, and an append that fails or is dropped leaves the staged upload as it
//! was. The upload's session keeps which objects make up the upload (`src/staging.rs`).
//!
//! Commit assembles the pieces into the blob's content address with one multipart upload,
//! copying each full part inside S3 (`UploadPartCopy`) and uploading a tail under 5 MiB by
//! value (not every service copies a part that small); a blob of one piece is one
//! `CopyObject`. S3 makes an object visible only when its upload completes, so a blob is
//! either absent or whole. The multipart upload cannot be opened before commit: its key is
//! the content address, which only the closing request names. Staging pieces as objects also
//! keeps them readable for
//! [`BlobStore::read_staged`](berth_core::ports::BlobStore::read_staged).
//!
//! Abandoned staging is removed by abort, and otherwise by the bucket's lifecycle rules, which
//! the infrastructure sets up: expire `<prefix>uploads/` after a few days, and abort
//! incomplete multipart uploads anywhere (a commit cut off mid-assembly leaves one at the
//! blob's key).

mod bucket;
mod config;
mod errors;
mod layout;
mod staging;
mod store;

pub use config::S3Config;
pub use store::S3BlobStore;
