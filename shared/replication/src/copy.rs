//! Copies one artifact between two ends: blobs first (skipping those the destination has,
//! mounting those it has elsewhere), the manifests of an index after its children, the tag
//! last, so a reader of the destination never sees a tag whose content is incomplete.
//! Blob bytes stream from one end to the other; nothing holds a whole blob.

use std::collections::HashMap;
use std::sync::Mutex;

use berth_core::Digest;
use berth_core::manifest::parse_manifest;

use crate::ends::{CopyError, CopyResult, End};
use crate::remote::RemoteManifest;

/// How deep indexes may nest (an index of indexes of images is two).
const MAX_DEPTH: usize = 4;
/// How many blob locations [`MountHints`] remembers.
const MAX_HINTS: usize = 10_000;

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyOutcome {
    /// Bytes of blobs sent (blobs the destination had, or mounted, count nothing).
    pub bytes: u64,
    pub blobs_sent: usize,
    pub blobs_skipped: usize,
    pub blobs_mounted: usize,
    /// The destination already had the reference at this digest.
    pub unchanged: bool,
    /// The destination had the reference at another digest and the policy does not overwrite.
    pub kept_existing: bool,
    pub digest: Option<Digest>,
}

/// Which destination repository holds which blob, learned from earlier copies to the same
/// destination: a later artifact's copy mounts from there instead of sending the bytes.
#[derive(Debug, Default)]
pub struct MountHints {
    known: Mutex<HashMap<Digest, String>>,
}

impl MountHints {
    fn get(&self, digest: &Digest) -> Option<String> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(digest)
            .cloned()
    }

    fn note(&self, digest: &Digest, repo: &str) {
        let mut known = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A hint is only a first guess (a failed mount falls back to sending the bytes):
        // forgetting them all now and then keeps the map small.
        if known.len() >= MAX_HINTS {
            known.clear();
        }
        known
            .entry(digest.clone())
            .or_insert_with(|| repo.to_owned());
    }
}

/// One artifact to copy.
#[derive(Debug, Clone)]
pub struct CopyJob<'a> {
    pub source_repo: &'a str,
    /// A tag or a digest.
    pub reference: &'a str,
    pub destination_repo: &'a str,
    /// Replace a destination tag that points at other content.
    pub overwrite: bool,
}

/// Copies `job.reference` from `source` to `destination`.
pub async fn copy_artifact(
    source: &dyn End,
    destination: &dyn End,
    job: &CopyJob<'_>,
    hints: &MountHints,
) -> CopyResult<CopyOutcome> {
    let manifest = source
        .manifest(job.source_repo, job.reference)
        .await?
        .ok_or_else(|| {
            CopyError::Invalid(format!(
                "{}:{} is not in {} (deleted since the execution started?)",
                job.source_repo,
                job.reference,
                source.describe()
            ))
        })?;
    let mut outcome = CopyOutcome {
        digest: Some(manifest.digest.clone()),
        ..CopyOutcome::default()
    };
    if let Some(existing) = destination
        .manifest_digest(job.destination_repo, job.reference)
        .await?
    {
        if existing == manifest.digest {
            outcome.unchanged = true;
            return Ok(outcome);
        }
        if !job.overwrite {
            outcome.kept_existing = true;
            return Ok(outcome);
        }
    }
    let copier = Copier {
        source,
        destination,
        job,
        hints,
    };
    copier.content(&manifest, 0, &mut outcome).await?;
    let stored = destination
        .put_manifest(
            job.destination_repo,
            job.reference,
            &manifest.media_type,
            manifest.bytes.clone(),
        )
        .await?;
    if stored != manifest.digest {
        return Err(CopyError::Invalid(format!(
            "{} stored {}:{} as {stored}, not {}",
            destination.describe(),
            job.destination_repo,
            job.reference,
            manifest.digest
        )));
    }
    Ok(outcome)
}

struct Copier<'a> {
    source: &'a dyn End,
    destination: &'a dyn End,
    job: &'a CopyJob<'a>,
    hints: &'a MountHints,
}

impl Copier<'_> {
    /// Everything `manifest` refers to, stored in the destination: its blobs, or its child
    /// manifests (each by digest, after its own content).
    async fn content(
        &self,
        manifest: &RemoteManifest,
        depth: usize,
        outcome: &mut CopyOutcome,
    ) -> CopyResult<()> {
        if depth > MAX_DEPTH {
            return Err(CopyError::Invalid(format!(
                "{}: indexes nest more than {MAX_DEPTH} deep",
                manifest.digest
            )));
        }
        let parsed = parse_manifest(Some(&manifest.media_type), &manifest.bytes)?;
        for blob in &parsed.blobs {
            self.blob(&blob.digest, blob.size, outcome).await?;
        }
        for child in &parsed.manifests {
            let child_ref = child.digest.to_string();
            if self
                .destination
                .manifest_digest(self.job.destination_repo, &child_ref)
                .await?
                .is_some()
            {
                continue;
            }
            let child_manifest = self
                .source
                .manifest(self.job.source_repo, &child_ref)
                .await?
                .ok_or_else(|| {
                    CopyError::Invalid(format!(
                        "{} names {}, which {} does not have",
                        manifest.digest,
                        child.digest,
                        self.source.describe()
                    ))
                })?;
            Box::pin(self.content(&child_manifest, depth + 1, outcome)).await?;
            self.destination
                .put_manifest(
                    self.job.destination_repo,
                    &child_ref,
                    &child_manifest.media_type,
                    child_manifest.bytes.clone(),
                )
                .await?;
        }
        Ok(())
    }

    async fn blob(&self, digest: &Digest, size: u64, outcome: &mut CopyOutcome) -> CopyResult<()> {
        let destination_repo = self.job.destination_repo;
        if self
            .destination
            .blob_size(destination_repo, digest)
            .await?
            .is_some()
        {
            outcome.blobs_skipped += 1;
            self.hints.note(digest, destination_repo);
            return Ok(());
        }
        if let Some(from) = self
            .hints
            .get(digest)
            .filter(|from| from != destination_repo)
            && self
                .destination
                .mount_blob(destination_repo, digest, &from)
                .await?
        {
            outcome.blobs_mounted += 1;
            return Ok(());
        }
        let (source_size, body) = self.source.blob(self.job.source_repo, digest).await?;
        if source_size != size {
            return Err(CopyError::Invalid(format!(
                "{} serves {digest} with {source_size} bytes; the manifest says {size}",
                self.source.describe()
            )));
        }
        outcome.bytes += self
            .destination
            .push_blob(destination_repo, digest, size, body)
            .await?;
        outcome.blobs_sent += 1;
        self.hints.note(digest, destination_repo);
        Ok(())
    }
}
