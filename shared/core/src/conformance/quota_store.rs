//! The [`QuotaStore`] cases, for a store that is also the [`MetadataStore`] whose manifest
//! puts and deletes keep each project's usage. Each case uses a project of its own.

use std::sync::Arc;

use super::garbage_index::{blob, image};
use crate::error::ErrorCode;
use crate::names::{RepositoryName, Tag};
use crate::ports::{ManifestRecord, MetadataStore, all_manifests};
use crate::quota::{QuotaStore, Refusal, charges};

/// A store that is both ports.
pub trait QuotaedStore: MetadataStore + QuotaStore {}
impl<T: MetadataStore + QuotaStore> QuotaedStore for T {}

/// Runs every quota case (the store shared, for the concurrent one).
pub async fn run_all(store: Arc<dyn QuotaedStore>) {
    super::announce("quota_store::usage_counts_each_distinct_digest_once_per_project");
    usage_counts_each_distinct_digest_once_per_project(store.as_ref()).await;
    super::announce("quota_store::a_put_past_the_limit_is_refused_and_writes_nothing");
    a_put_past_the_limit_is_refused_and_writes_nothing(store.as_ref()).await;
    super::announce("quota_store::concurrent_puts_never_end_past_the_limit");
    concurrent_puts_never_end_past_the_limit(store).await;
}

fn project() -> String {
    format!("quota{}", super::nonce())
}

fn repository(project: &str, name: &str) -> RepositoryName {
    format!("{project}/{name}")
        .parse()
        .unwrap_or_else(|e| panic!("{project}/{name}: {e}"))
}

fn tag(name: &str) -> Tag {
    name.parse().unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// What `manifest` adds to a project holding none of its digests.
fn weight(manifest: &ManifestRecord) -> u64 {
    charges(&manifest.digest, &manifest.media_type, &manifest.bytes)
        .iter()
        .map(|t| t.size)
        .sum()
}

async fn used(store: &dyn QuotaedStore, project: &str) -> u64 {
    store
        .quota(project)
        .await
        .unwrap_or_else(|e| panic!("quota({project}) failed: {e}"))
        .used
}

async fn put(store: &dyn QuotaedStore, repository: &RepositoryName, manifest: &ManifestRecord) {
    store
        .put_manifest(repository, manifest, None)
        .await
        .unwrap_or_else(|e| panic!("put_manifest in {repository} failed: {e}"));
}

pub async fn usage_counts_each_distinct_digest_once_per_project(store: &dyn QuotaedStore) {
    let (p, other) = (project(), project());
    let (a, b) = (repository(&p, "a"), repository(&p, "b"));
    let (config, shared, only1, only2) = (blob("c"), blob("l1"), blob("l2"), blob("l3"));
    let first = image(&config, &[&shared, &only1]);
    let second = image(&config, &[&shared, &only2, &shared]);
    assert_eq!(used(store, &p).await, 0, "a new project uses nothing");

    put(store, &a, &first).await;
    assert_eq!(used(store, &p).await, weight(&first));
    put(store, &a, &second).await;
    let both = weight(&first) + second.bytes.len() as u64 + 10;
    assert_eq!(
        used(store, &p).await,
        both,
        "config and shared layer count once"
    );
    put(store, &b, &first).await;
    assert_eq!(
        used(store, &p).await,
        both,
        "the same manifest in a second repository"
    );
    put(store, &a, &first).await;
    assert_eq!(used(store, &p).await, both, "a manifest stored again");
    assert_eq!(used(store, &other).await, 0, "another project is untouched");
    let counted = store
        .counted(&p, &[shared.clone(), blob("never")])
        .await
        .expect("counted");
    assert_eq!(counted, vec![true, false]);

    assert!(
        store
            .delete_manifest(&a, &first.digest)
            .await
            .expect("delete")
    );
    assert_eq!(
        used(store, &p).await,
        both,
        "b still holds the first manifest"
    );
    assert!(
        store
            .delete_repository(&b)
            .await
            .expect("delete repository")
    );
    assert_eq!(
        used(store, &p).await,
        weight(&second),
        "the first manifest and its own layer left with their last repository"
    );
    assert!(
        store
            .delete_manifest(&a, &second.digest)
            .await
            .expect("delete")
    );
    assert_eq!(used(store, &p).await, 0, "nothing left");
}

pub async fn a_put_past_the_limit_is_refused_and_writes_nothing(store: &dyn QuotaedStore) {
    let p = project();
    let repo = repository(&p, "app");
    let config = blob("c");
    let small = image(&config, &[&blob("small")]);
    let big = image(&config, &[&blob("big1"), &blob("big2")]);
    let fits = weight(&small) + big.bytes.len() as u64 + 20 - 1;
    store.set_limit(&p, Some(fits)).await.expect("set_limit");
    assert_eq!(store.quota(&p).await.expect("quota").limit, Some(fits));

    store
        .put_manifest(&repo, &small, Some(&tag("v1")))
        .await
        .expect("a manifest within the limit is stored");
    let error = store
        .put_manifest(&repo, &big, Some(&tag("v2")))
        .await
        .expect_err("one byte past the limit");
    assert_eq!(error.code(), ErrorCode::Denied, "{error}");
    let refusal = Refusal::of(&error).expect("the refusal says what it would have done");
    assert_eq!(
        (refusal.used, refusal.adding, refusal.limit),
        (weight(&small), big.bytes.len() as u64 + 20, fits)
    );
    assert_eq!(used(store, &p).await, weight(&small), "usage unchanged");
    let present = store
        .manifests_present(&repo, std::slice::from_ref(&big.digest))
        .await
        .expect("present");
    assert_eq!(present, vec![false], "the refused manifest is not stored");
    assert!(
        store
            .tagged_manifest(&repo, &tag("v2"))
            .await
            .expect("tag")
            .is_none(),
        "nor its tag"
    );

    // A limit lowered below the usage refuses what adds bytes, not what adds none.
    store.set_limit(&p, Some(0)).await.expect("set_limit");
    store
        .put_manifest(&repo, &small, Some(&tag("again")))
        .await
        .expect("a stored manifest tagged again adds nothing");
    store
        .put_manifest(&repository(&p, "copy"), &small, None)
        .await
        .expect("the same manifest in another repository adds nothing");
    store.set_limit(&p, None).await.expect("set_limit");
    assert_eq!(store.quota(&p).await.expect("quota").limit, None);
    store
        .put_manifest(&repo, &big, Some(&tag("v2")))
        .await
        .expect("no limit");
}

pub async fn concurrent_puts_never_end_past_the_limit(store: Arc<dyn QuotaedStore>) {
    let p = project();
    let repo = repository(&p, "race");
    let config = blob("c");
    let images: Vec<ManifestRecord> = (0..20)
        .map(|i| image(&config, &[&blob(&format!("layer{i}"))]))
        .collect();
    // Room for about five of them.
    let limit = weight(&images[0]) + 4 * (images[0].bytes.len() as u64 + 10) + 5;
    store.set_limit(&p, Some(limit)).await.expect("set_limit");
    let tasks: Vec<_> = images
        .iter()
        .cloned()
        .map(|manifest| {
            let (store, repo) = (store.clone(), repo.clone());
            tokio::spawn(async move { store.put_manifest(&repo, &manifest, None).await })
        })
        .collect();
    let mut stored = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(()) => stored += 1,
            Err(error) => assert_eq!(error.code(), ErrorCode::Denied, "{error}"),
        }
    }
    let usage = used(store.as_ref(), &p).await;
    assert!(usage <= limit, "usage {usage} past the limit {limit}");
    let remaining = all_manifests(store.as_ref(), &repo)
        .await
        .expect("manifests");
    assert_eq!(remaining.len(), stored, "each accepted put is stored");
    assert!((1..20).contains(&stored), "{stored} of 20 stored");
    let expected = weight(&remaining[0])
        + remaining[1..]
            .iter()
            .map(|m| m.bytes.len() as u64 + 10)
            .sum::<u64>();
    assert_eq!(usage, expected, "usage is exactly what is stored");
}
