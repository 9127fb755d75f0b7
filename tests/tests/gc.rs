//! Online garbage collection against a running registry on embedded storage: images that
//! share layers pushed concurrently while collection runs again and again and other images
//! are deleted. What is kept pulls byte-exact, what is garbage is deleted, and a dry run
//! reports what a real run then frees.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use berth_core::gc::{Collector, GcOptions, GcProgress, now_ms};
use berth_tests::aws::AwsSandbox;
use berth_tests::{Image, TestRegistry, content, descriptor, media, sha256};
use futures_util::StreamExt;
use serde_json::json;

const IMAGES: usize = 50;
const DOOMED: usize = 20;
const PUSHES_AT_ONCE: usize = 8;

/// Image `n`: its own config and layer on top of two of five shared base layers.
fn image(n: usize, bases: &[Vec<u8>]) -> Image {
    let config = json!({"architecture": "amd64", "os": "linux", "n": n, "nonce": now_ms()})
        .to_string()
        .into_bytes();
    let layers = vec![
        bases[n % bases.len()].clone(),
        bases[(n + 1) % bases.len()].clone(),
        content(&format!("own layer {n} {}", now_ms()), 4096 + n),
    ];
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": descriptor(media::OCI_CONFIG, &config),
        "layers": layers.iter().map(|l| descriptor(media::OCI_LAYER, l)).collect::<Vec<_>>(),
    });
    Image {
        media_type: media::OCI_MANIFEST.to_owned(),
        config,
        layers,
        manifest: manifest.to_string().into_bytes(),
    }
}

fn repository(n: usize) -> String {
    format!("gc/app{}", n % 10)
}

/// Pulls an image by digest and compares every byte.
async fn assert_pulls(registry: &TestRegistry, repo: &str, image: &Image) {
    let digest = image.digest();
    let manifest = registry
        .get(&format!("/v2/{repo}/manifests/{digest}"))
        .await;
    manifest.assert_status(200);
    assert_eq!(&manifest.body[..], &image.manifest[..], "{repo}@{digest}");
    for blob in std::iter::once(&image.config).chain(&image.layers) {
        let got = registry
            .get(&format!("/v2/{repo}/blobs/{}", sha256(blob)))
            .await;
        got.assert_status(200);
        assert_eq!(&got.body[..], &blob[..], "a blob of {repo}@{digest}");
    }
}

/// Where the blobs' bytes are, to list them.
enum Bucket<'a> {
    /// Embedded storage's data directory.
    Files(&'a std::path::Path),
    S3(&'a AwsSandbox),
}

impl Bucket<'_> {
    /// The digests of the stored blobs.
    async fn blobs(&self) -> HashSet<String> {
        match self {
            Self::Files(dir) => {
                let mut found = HashSet::new();
                for prefix in std::fs::read_dir(dir.join("blobs/sha256")).expect("blobs") {
                    let prefix = prefix.expect("an entry").path();
                    for file in std::fs::read_dir(prefix).expect("a prefix directory") {
                        let name = file.expect("an entry").file_name();
                        found.insert(format!("sha256:{}", name.to_string_lossy()));
                    }
                }
                found
            }
            Self::S3(sandbox) => sandbox
                .keys("blobs/")
                .await
                .iter()
                .filter_map(|key| key.rsplit_once('/'))
                .map(|(_, hex)| format!("sha256:{hex}"))
                .collect(),
        }
    }
}

fn referenced(images: &[(String, Image)]) -> HashSet<String> {
    images
        .iter()
        .flat_map(|(_, image)| std::iter::once(&image.config).chain(&image.layers))
        .map(|blob| sha256(blob))
        .collect()
}

async fn collect(collector: &Collector, options: GcOptions) -> GcProgress {
    let mut progress = GcProgress::new(options, now_ms());
    collector
        .run(&mut progress, 7)
        .await
        .expect("a collection run");
    progress
}

/// Within the grace window every push succeeds while collection runs; afterwards kept
/// images pull byte-exact, garbage is gone, and a dry run foretells the real run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_and_deletions_survive_repeated_collection() {
    let (registry, stores) = TestRegistry::start_with_stores().await;
    let bucket = Bucket::Files(registry.data_dir());
    survive_repeated_collection(&registry, &stores, &bucket).await;
}

/// The same on Garage and DynamoDB Local.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Garage and DynamoDB Local: scripts/test-all.sh starts them"]
async fn pushes_and_deletions_survive_repeated_collection_on_s3_and_dynamodb() {
    let sandbox = AwsSandbox::new().await;
    let mut storage = sandbox.storage();
    // Blobs are streamed, so that pulls compare bytes without following redirects.
    storage.s3.redirect = false;
    let (registry, stores) = TestRegistry::start_with_stores_on(Some(storage)).await;
    survive_repeated_collection(&registry, &stores, &Bucket::S3(&sandbox)).await;
}

async fn survive_repeated_collection(
    registry: &TestRegistry,
    stores: &berth_runtime::Stores,
    bucket: &Bucket<'_>,
) {
    let (index, _) = stores
        .garbage
        .clone()
        .expect("the storage keeps a garbage index");
    let collector = Arc::new(Collector::new(
        stores.metadata.clone(),
        index,
        stores.blobs.clone(),
    ));
    let bases: Vec<Vec<u8>> = (0..5)
        .map(|n| content(&format!("base layer {n}"), 64 * 1024))
        .collect();
    // A push that finds a shared base layer stored does not upload (claim) it again: the
    // grace window must outlast the gap between the last reference to a base layer the
    // deletions drop and the first kept manifest that names it, even on a loaded machine.
    let grace = GcOptions {
        grace_ms: 5_000,
        ..GcOptions::default()
    };

    let doomed: Vec<(String, Image)> = (0..DOOMED)
        .map(|n| (repository(n), image(1000 + n, &bases)))
        .collect();
    for (repo, image) in &doomed {
        registry.push_image(repo, "doomed", image).await;
    }

    let pushing = Arc::new(AtomicBool::new(true));
    let runs = tokio::spawn({
        let (collector, pushing) = (collector.clone(), pushing.clone());
        async move {
            let mut runs = 0;
            while pushing.load(Ordering::SeqCst) {
                collect(&collector, grace).await;
                runs += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            runs
        }
    });
    let deletions = tokio::spawn({
        let client = reqwest::Client::new();
        let base = registry.url("");
        let doomed: Vec<(String, String)> = doomed
            .iter()
            .map(|(repo, image)| (repo.clone(), image.digest()))
            .collect();
        async move {
            for (repo, digest) in doomed {
                let url = format!("{base}/v2/{repo}/manifests/{digest}");
                let status = client.delete(url).send().await.expect("a DELETE").status();
                assert_eq!(status, 202, "deleting {repo}@{digest}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let kept: Vec<(String, Image)> = (0..IMAGES)
        .map(|n| (repository(n), image(n, &bases)))
        .collect();
    futures_util::stream::iter(&kept)
        .for_each_concurrent(PUSHES_AT_ONCE, |(repo, image)| async move {
            registry.push_image(repo, "v1", image).await;
        })
        .await;
    deletions.await.expect("the deletions");
    pushing.store(false, Ordering::SeqCst);
    let runs = runs.await.expect("the collection runs");
    assert!(runs >= 1, "collection ran during the pushes");

    for (repo, image) in &kept {
        assert_pulls(registry, repo, image).await;
    }

    // Past the grace window, a dry run says what the real run then frees.
    tokio::time::sleep(Duration::from_millis(grace.grace_ms + 100)).await;
    let dry = collect(
        &collector,
        GcOptions {
            dry_run: true,
            ..grace
        },
    )
    .await;
    let real = collect(&collector, grace).await;
    assert_eq!(
        (dry.blobs_deleted, dry.bytes_freed),
        (real.blobs_deleted, real.bytes_freed),
        "the dry run: {:?}\nthe real run: {:?}",
        dry.log,
        real.log
    );

    let stored = bucket.blobs().await;
    let wanted = referenced(&kept);
    assert_eq!(
        stored, wanted,
        "the blobs left are exactly those the kept images reference"
    );
    let doomed_only: HashSet<String> = referenced(&doomed).difference(&wanted).cloned().collect();
    assert_eq!(
        doomed_only.len(),
        2 * DOOMED,
        "each doomed image's config and layer"
    );
    for (repo, image) in &kept {
        assert_pulls(registry, repo, image).await;
    }
}

/// With no grace at all a collection may take a layer between its upload and the manifest
/// that references it: that push is refused (MANIFEST_BLOB_UNKNOWN), never accepted with a
/// blob missing, and pushing again succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_grace_a_push_is_refused_rather_than_left_broken() {
    let (registry, stores) = TestRegistry::start_with_stores().await;
    let (index, _) = stores.garbage.clone().expect("a garbage index");
    let collector = Collector::new(stores.metadata.clone(), index, stores.blobs.clone());
    let no_grace = GcOptions {
        grace_ms: 0,
        ..GcOptions::default()
    };
    let bases = vec![content("base", 1024)];
    let image = image(7, &bases);
    let repo = "gc/nograce";
    registry.push_blob(repo, &image.config).await;
    for layer in &image.layers {
        registry.push_blob(repo, layer).await;
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let run = collect(&collector, no_grace).await;
    assert_eq!(
        run.blobs_deleted, 3,
        "the unreferenced config and layers: {:?}",
        run.log
    );
    let refused = registry
        .put_manifest(repo, "v1", Some(&image.media_type), &image.manifest)
        .await;
    refused.assert_error(400, "MANIFEST_BLOB_UNKNOWN");
    registry.push_image(repo, "v1", &image).await;
    assert_pulls(&registry, repo, &image).await;
}
