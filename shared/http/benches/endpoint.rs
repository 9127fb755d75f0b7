//! The endpoint parser runs on every request: how long does it take?

use std::hint::black_box;

use berth_http::Endpoint;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Method;

fn parse(c: &mut Criterion) {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let manifest_by_tag = "/v2/team/apps/web/manifests/v1.2.3".to_owned();
    let blob = format!("/v2/team/apps/web/blobs/{digest}");
    let upload = "/v2/team/apps/web/blobs/uploads/0f9c1d52-3c1a-4d2b-9a53-6a3c1f3b2e10".to_owned();
    let mut group = c.benchmark_group("endpoint_parse");
    for (label, method, path, query) in [
        ("manifest_by_tag", Method::GET, manifest_by_tag, None),
        ("blob", Method::GET, blob, None),
        (
            "complete_upload",
            Method::PUT,
            upload,
            Some(format!("digest={digest}")),
        ),
    ] {
        group.bench_function(label, |b| {
            b.iter(|| Endpoint::parse(black_box(&method), black_box(&path), query.as_deref()))
        });
    }
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
