//! The [`GarbageIndex`] cases, for a store that is also the [`MetadataStore`] whose manifest
//! puts and deletes keep the counts. Each case uses blobs and repositories of its own.

use bytes::Bytes;

use crate::digest::{Algorithm, Digest};
use crate::error::ErrorCode;
use crate::gc::{BlobRecord, BlobState, Claim, GarbageIndex};
use crate::manifest::media_type;
use crate::names::RepositoryName;
use crate::ports::{ManifestRecord, MetadataStore};

/// A store that is both ports.
pub trait IndexedStore: MetadataStore + GarbageIndex {}
impl<T: MetadataStore + GarbageIndex> IndexedStore for T {}

/// Runs every garbage index case.
pub async fn run_all(store: &dyn IndexedStore) {
    super::announce("garbage_index::a_claim_makes_a_live_unreferenced_candidate");
    a_claim_makes_a_live_unreferenced_candidate(store).await;
    super::announce("garbage_index::manifests_count_their_distinct_blobs_once_per_repository");
    manifests_count_their_distinct_blobs_once_per_repository(store).await;
    super::announce("garbage_index::collection_is_conditional_and_fences_claims_puts_and_links");
    collection_is_conditional_and_fences_claims_puts_and_links(store).await;
}

fn nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

pub(super) fn blob(seed: &str) -> Digest {
    Digest::of(Algorithm::Sha256, format!("{seed}-{}", nonce()).as_bytes())
}

fn repository(label: &str) -> RepositoryName {
    format!("gc/{label}-{}", nonce())
        .parse()
        .unwrap_or_else(|e| panic!("{label}: {e}"))
}

/// An image manifest of `config` and `layers` (sizes 1 and 10 bytes each).
pub(super) fn image(config: &Digest, layers: &[&Digest]) -> ManifestRecord {
    let layers: Vec<String> = layers
        .iter()
        .map(|digest| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{digest}","size":10}}"#
            )
        })
        .collect();
    let bytes = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":1}},"layers":[{}]}}"#,
        media_type::OCI_MANIFEST,
        layers.join(",")
    );
    ManifestRecord {
        digest: Digest::of(Algorithm::Sha256, bytes.as_bytes()),
        media_type: media_type::OCI_MANIFEST.to_owned(),
        bytes: Bytes::from(bytes),
        referrer: None,
    }
}

async fn record(store: &dyn IndexedStore, digest: &Digest) -> (u64, BlobState) {
    let record = store
        .blob_record(digest)
        .await
        .unwrap_or_else(|e| panic!("blob_record({digest}) failed: {e}"))
        .unwrap_or_else(|| panic!("{digest} has no record"));
    (record.refs, record.state)
}

async fn is_candidate(store: &dyn IndexedStore, digest: &Digest) -> bool {
    let mut after: Option<String> = None;
    loop {
        let page = store
            .candidates(after.as_deref(), 100)
            .await
            .unwrap_or_else(|e| panic!("candidates failed: {e}"));
        if page.contains(digest) {
            return true;
        }
        if page.len() < 100 {
            return false;
        }
        after = page.last().map(ToString::to_string);
    }
}

async fn claim(store: &dyn IndexedStore, digest: &Digest, now_ms: u64) -> Claim {
    store
        .claim_blob(digest, 10, now_ms)
        .await
        .unwrap_or_else(|e| panic!("claim_blob({digest}) failed: {e}"))
}

async fn put(store: &dyn IndexedStore, repository: &RepositoryName, manifest: &ManifestRecord) {
    store
        .put_manifest(repository, manifest, None)
        .await
        .unwrap_or_else(|e| panic!("put_manifest({repository}) failed: {e}"));
}

async fn delete(store: &dyn IndexedStore, repository: &RepositoryName, manifest: &ManifestRecord) {
    let deleted = store
        .delete_manifest(repository, &manifest.digest)
        .await
        .unwrap_or_else(|e| panic!("delete_manifest({repository}) failed: {e}"));
    assert!(deleted, "{repository}@{} was stored", manifest.digest);
}

async fn stored_bytes(store: &dyn IndexedStore) -> u64 {
    store
        .stored_bytes()
        .await
        .unwrap_or_else(|e| panic!("stored_bytes failed: {e}"))
}

/// The record of a blob, as `end_collect` takes it.
async fn marked_record(store: &dyn IndexedStore, digest: &Digest) -> BlobRecord {
    store
        .blob_record(digest)
        .await
        .unwrap_or_else(|e| panic!("blob_record failed: {e}"))
        .unwrap_or_else(|| panic!("{digest} has no record"))
}

/// A claim creates a live record without references and makes the blob a candidate; a
/// later claim touches it; a candidate dropped while unreferenced stays one. A new blob's
/// size is added to the stored bytes once.
pub async fn a_claim_makes_a_live_unreferenced_candidate(store: &dyn IndexedStore) {
    let digest = blob("claimed");
    let before = stored_bytes(store).await;
    assert_eq!(claim(store, &digest, 1_000).await, Claim::Claimed);
    assert_eq!(
        stored_bytes(store).await,
        before + 10,
        "a new blob is counted"
    );
    let first = store.blob_record(&digest).await.ok().flatten();
    assert_eq!(
        first
            .as_ref()
            .map(|r| (r.size, r.refs, r.touched_ms, r.state)),
        Some((10, 0, 1_000, BlobState::Live))
    );
    assert!(
        is_candidate(store, &digest).await,
        "a claimed blob is a candidate"
    );
    assert_eq!(claim(store, &digest, 2_000).await, Claim::Claimed);
    let touched = store.blob_record(&digest).await.ok().flatten();
    assert_eq!(touched.map(|r| r.touched_ms), Some(2_000), "claimed again");
    let unknown = blob("unknown");
    let both = store
        .blob_records(&[unknown.clone(), digest.clone(), digest.clone()])
        .await
        .unwrap_or_else(|e| panic!("blob_records failed: {e}"));
    assert_eq!(
        both.iter()
            .map(|r| r.as_ref().map(|r| r.touched_ms))
            .collect::<Vec<_>>(),
        [None, Some(2_000), Some(2_000)],
        "records in the order asked"
    );
    assert_eq!(stored_bytes(store).await, before + 10, "and counted once");
    store
        .drop_candidates(std::slice::from_ref(&digest))
        .await
        .unwrap_or_else(|e| panic!("drop_candidates failed: {e}"));
    assert!(
        is_candidate(store, &digest).await,
        "an unreferenced blob stays a candidate"
    );
}

/// A manifest new in a repository adds one reference to each distinct blob it names;
/// storing it again adds none; another repository adds its own. Deletions drop them, and a
/// blob left without references becomes a candidate again.
pub async fn manifests_count_their_distinct_blobs_once_per_repository(store: &dyn IndexedStore) {
    let (config, layer) = (blob("config"), blob("layer"));
    for digest in [&config, &layer] {
        claim(store, digest, 1_000).await;
    }
    let manifest = image(&config, &[&layer, &layer]);
    let (one, two) = (repository("one"), repository("two"));
    put(store, &one, &manifest).await;
    put(store, &one, &manifest).await;
    assert_eq!(
        record(store, &layer).await,
        (1, BlobState::Live),
        "one repository"
    );
    put(store, &two, &manifest).await;
    assert_eq!(record(store, &config).await, (2, BlobState::Live), "two");
    store
        .drop_candidates(&[layer.clone(), config.clone()])
        .await
        .unwrap_or_else(|e| panic!("drop_candidates failed: {e}"));
    assert!(
        !is_candidate(store, &layer).await,
        "a referenced candidate is dropped"
    );

    delete(store, &one, &manifest).await;
    assert_eq!(
        record(store, &layer).await,
        (1, BlobState::Live),
        "one left"
    );
    let removed = store
        .delete_repository(&two)
        .await
        .unwrap_or_else(|e| panic!("delete_repository failed: {e}"));
    assert!(removed);
    assert_eq!(
        record(store, &layer).await,
        (0, BlobState::Live),
        "none left"
    );
    assert!(
        is_candidate(store, &layer).await,
        "a blob that lost its last reference is a candidate"
    );

    let unknown = blob("never-claimed");
    put(store, &one, &image(&unknown, &[])).await;
    assert_eq!(
        record(store, &unknown).await,
        (1, BlobState::Live),
        "a blob without a record gets one when first referenced"
    );
}

/// Only an unreferenced blob touched before the cutoff is marked; a marked blob refuses
/// claims, manifest puts and its links until collected, then a claim makes it live again.
pub async fn collection_is_conditional_and_fences_claims_puts_and_links(store: &dyn IndexedStore) {
    let (kept, doomed) = (blob("kept"), blob("doomed"));
    let repo = repository("fenced");
    for digest in [&kept, &doomed] {
        claim(store, digest, 1_000).await;
        store
            .link_blob(&repo, digest, 10)
            .await
            .unwrap_or_else(|e| panic!("link_blob failed: {e}"));
    }
    put(store, &repo, &image(&kept, &[])).await;
    let begin = |digest: Digest, cutoff: u64| async move {
        let mut marked = store
            .begin_collect(std::slice::from_ref(&digest), cutoff)
            .await
            .unwrap_or_else(|e| panic!("begin_collect({digest}) failed: {e}"));
        assert!(marked.len() <= 1, "{marked:?}");
        marked.pop()
    };
    assert_eq!(begin(kept.clone(), 5_000).await, None, "referenced");
    assert_eq!(
        begin(doomed.clone(), 1_000).await,
        None,
        "touched at the cutoff"
    );
    let marked = begin(doomed.clone(), 1_001).await;
    assert_eq!(
        marked.map(|r| (r.size, r.state)),
        Some((10, BlobState::Collecting))
    );
    assert_eq!(
        begin(doomed.clone(), 1_001).await.map(|r| r.state),
        Some(BlobState::Collecting),
        "a marked blob stays marked for a run that resumes"
    );
    let batch = store
        .begin_collect(&[kept.clone(), doomed.clone()], 5_000)
        .await
        .unwrap_or_else(|e| panic!("begin_collect failed: {e}"));
    assert_eq!(
        batch.iter().map(|r| &r.digest).collect::<Vec<_>>(),
        [&doomed],
        "of two at once, only the unreferenced one"
    );

    assert_eq!(claim(store, &doomed, 9_000).await, Claim::Collecting);
    let links = store
        .blob_links(&repo, &[doomed.clone(), kept.clone()])
        .await
        .unwrap_or_else(|e| panic!("blob_links failed: {e}"));
    assert_eq!(
        links,
        [None, Some(10)],
        "a collecting blob's link is not served"
    );
    let refused = store
        .put_manifest(&repo, &image(&kept, &[&doomed]), None)
        .await
        .expect_err("a manifest referencing a collecting blob");
    assert_eq!(refused.code(), ErrorCode::ManifestBlobUnknown);
    assert_eq!(
        record(store, &kept).await.0,
        1,
        "the refused put counted nothing"
    );

    let stored = stored_bytes(store).await;
    store
        .end_collect(&[marked_record(store, &doomed).await], 10_000)
        .await
        .unwrap_or_else(|e| panic!("end_collect failed: {e}"));
    assert_eq!(
        stored_bytes(store).await,
        stored - 10,
        "a collected blob's bytes are off the total"
    );
    assert_eq!(record(store, &doomed).await.1, BlobState::Collected);
    assert!(is_candidate(store, &doomed).await, "until forgotten");
    store
        .forget_collected(&doomed, 10_000)
        .await
        .unwrap_or_else(|e| panic!("forget_collected failed: {e}"));
    assert_eq!(
        record(store, &doomed).await.1,
        BlobState::Collected,
        "collected at the bound: kept"
    );
    assert_eq!(
        claim(store, &doomed, 11_000).await,
        Claim::Claimed,
        "uploaded again"
    );
    assert_eq!(record(store, &doomed).await, (0, BlobState::Live));
    let links = store
        .blob_links(&repo, std::slice::from_ref(&doomed))
        .await
        .unwrap_or_else(|e| panic!("blob_links failed: {e}"));
    assert_eq!(links, [Some(10)], "served again once live");

    let gone = blob("forgotten");
    claim(store, &gone, 1_000).await;
    begin(gone.clone(), 2_000).await;
    store
        .end_collect(&[marked_record(store, &gone).await], 3_000)
        .await
        .unwrap_or_else(|e| panic!("end_collect failed: {e}"));
    store
        .forget_collected(&gone, 3_001)
        .await
        .unwrap_or_else(|e| panic!("forget_collected failed: {e}"));
    assert_eq!(store.blob_record(&gone).await.ok().flatten(), None);
    assert!(!is_candidate(store, &gone).await);
}
