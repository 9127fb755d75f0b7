//! Hot paths of the core: hashing uploaded bytes, parsing digests and pushed manifests.

use std::hint::black_box;

use berth_core::digest::DigestHasher;
use berth_core::manifest::{media_type, parse_manifest};
use berth_core::{Algorithm, Digest};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn hashing(c: &mut Criterion) {
    let chunk = vec![0x5au8; 1 << 20];
    let mut group = c.benchmark_group("hash_1MiB");
    group.throughput(Throughput::Bytes(chunk.len() as u64));
    for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
        group.bench_function(algorithm.as_str(), |b| {
            b.iter(|| {
                let mut hasher = DigestHasher::new(algorithm);
                hasher.update(black_box(&chunk));
                hasher.finish()
            })
        });
    }
    group.finish();
    c.bench_function("hash_state_save_restore", |b| {
        let mut hasher = DigestHasher::new(Algorithm::Sha256);
        hasher.update(b"some bytes already received");
        b.iter(|| DigestHasher::restore(&black_box(&hasher).save()))
    });
}

fn parsing(c: &mut Criterion) {
    let digest = format!("sha256:{}", "ab".repeat(32));
    c.bench_function("digest_parse", |b| {
        b.iter(|| black_box(&digest).parse::<Digest>())
    });

    let layers: Vec<_> = (0..10)
        .map(|i| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": format!("sha256:{:064x}", i),
                "size": 1000 + i,
            })
        })
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": 100},
        "layers": layers,
    }))
    .expect("manifest serialises");
    c.bench_function("manifest_parse_10_layers", |b| {
        b.iter(|| parse_manifest(Some(media_type::OCI_MANIFEST), black_box(&manifest)))
    });
}

criterion_group!(benches, hashing, parsing);
criterion_main!(benches);
