//! Blob reads (whole and ranged), deletion, repository isolation and cross-repository mounts.

use berth_tests::{Method, TestRegistry, content, sha256};

const REPO: &str = "blobs/app";

async fn registry_with_blob(bytes: &[u8]) -> (TestRegistry, String) {
    let registry = TestRegistry::start().await;
    let digest = registry.push_blob(REPO, bytes).await;
    (registry, format!("/v2/{REPO}/blobs/{digest}"))
}

#[tokio::test]
async fn head_reports_size_and_digest() {
    let bytes = content("head", 1000);
    let (registry, path) = registry_with_blob(&bytes).await;
    let reply = registry.head(&path).await;
    reply.assert_status(200).assert_api_version();
    assert_eq!(reply.content_length(), 1000);
    assert_eq!(
        reply.header("docker-content-digest"),
        Some(sha256(&bytes).as_str())
    );
    assert!(reply.body.is_empty());
}

#[tokio::test]
async fn get_returns_the_exact_bytes() {
    let bytes = content("get", 70_000);
    let (registry, path) = registry_with_blob(&bytes).await;
    let reply = registry.get(&path).await;
    reply.assert_status(200);
    assert_eq!(reply.content_length(), 70_000);
    assert_eq!(
        reply.header("docker-content-digest"),
        Some(sha256(&bytes).as_str())
    );
    assert_eq!(reply.body.as_ref(), bytes.as_slice());
}

#[tokio::test]
async fn range_reads() {
    let bytes = content("ranges", 100);
    let (registry, path) = registry_with_blob(&bytes).await;
    let cases: [(&str, usize, usize); 6] = [
        ("bytes=0-9", 0, 10),
        ("bytes=-10", 90, 100),
        ("bytes=90-", 90, 100),
        ("bytes=95-1000", 95, 100),
        ("bytes=0-0", 0, 1),
        ("bytes=-1000", 0, 100),
    ];
    for (range, start, end) in cases {
        let reply = registry.get_with_range(&path, range).await;
        reply.assert_status(206).assert_api_version();
        assert_eq!(
            reply.header("content-range"),
            Some(format!("bytes {start}-{}/100", end - 1).as_str()),
            "{range}"
        );
        assert_eq!(reply.content_length(), (end - start) as u64, "{range}");
        assert_eq!(reply.body.as_ref(), &bytes[start..end], "{range}");
    }
}

#[tokio::test]
async fn ranges_berth_does_not_serve_partially_get_the_whole_blob() {
    let bytes = content("whole", 100);
    let (registry, path) = registry_with_blob(&bytes).await;
    for range in ["bytes=0-1,5-6", "items=0-9"] {
        let reply = registry.get_with_range(&path, range).await;
        reply.assert_status(200);
        assert!(reply.header("content-range").is_none(), "{range}: {reply}");
        assert_eq!(reply.body.as_ref(), bytes.as_slice(), "{range}");
    }
}

#[tokio::test]
async fn unsatisfiable_ranges_are_416_with_the_size() {
    let bytes = content("unsatisfiable", 100);
    let (registry, path) = registry_with_blob(&bytes).await;
    for range in ["bytes=100-", "bytes=150-200", "bytes=-0", "bytes=9-3"] {
        let reply = registry.get_with_range(&path, range).await;
        reply.assert_error(416, "RANGE_INVALID");
        assert_eq!(
            reply.header("content-range"),
            Some("bytes */100"),
            "{range}"
        );
    }
}

#[tokio::test]
async fn unknown_blobs_are_404() {
    let registry = TestRegistry::start().await;
    registry.push_blob(REPO, b"something").await;
    for repo in [REPO, "never/pushed"] {
        let path = format!("/v2/{repo}/blobs/{}", sha256(b"absent"));
        registry.get(&path).await.assert_error(404, "BLOB_UNKNOWN");
        registry.head(&path).await.assert_head_error(404);
        registry
            .delete(&path)
            .await
            .assert_error(404, "BLOB_UNKNOWN");
    }
}

#[tokio::test]
async fn deleted_blobs_are_gone() {
    let bytes = content("delete", 64);
    let (registry, path) = registry_with_blob(&bytes).await;
    let reply = registry.delete(&path).await;
    reply.assert_status(202).assert_api_version();
    registry.head(&path).await.assert_head_error(404);
    registry.get(&path).await.assert_error(404, "BLOB_UNKNOWN");
    registry
        .delete(&path)
        .await
        .assert_error(404, "BLOB_UNKNOWN");

    // And it can be pushed again.
    registry.push_blob(REPO, &bytes).await;
    assert_eq!(registry.get(&path).await.body.as_ref(), bytes.as_slice());
}

#[tokio::test]
async fn a_blob_of_another_repository_is_not_readable() {
    let bytes = content("isolated", 64);
    let (registry, _) = registry_with_blob(&bytes).await;
    let digest = sha256(&bytes);
    let other = format!("/v2/other/app/blobs/{digest}");
    registry.head(&other).await.assert_head_error(404);
    registry.get(&other).await.assert_error(404, "BLOB_UNKNOWN");
    registry
        .delete(&other)
        .await
        .assert_error(404, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn mount_from_a_repository_that_has_the_blob() {
    let bytes = content("mounted", 500);
    let (registry, _) = registry_with_blob(&bytes).await;
    let digest = sha256(&bytes);
    let reply = registry
        .call(
            Method::POST,
            &format!("/v2/target/app/blobs/uploads/?mount={digest}&from={REPO}"),
        )
        .await;
    reply
        .assert_blob_created("target/app", &digest)
        .assert_api_version();

    let path = format!("/v2/target/app/blobs/{digest}");
    let head = registry.head(&path).await;
    head.assert_status(200);
    assert_eq!(head.content_length(), 500);
    assert_eq!(registry.get(&path).await.body.as_ref(), bytes.as_slice());

    // The two links are independent.
    registry
        .delete(&format!("/v2/{REPO}/blobs/{digest}"))
        .await
        .assert_status(202);
    registry.head(&path).await.assert_status(200);
}

#[tokio::test]
async fn mount_with_an_encoded_from() {
    let bytes = content("mounted encoded", 50);
    let (registry, _) = registry_with_blob(&bytes).await;
    let digest = sha256(&bytes);
    let encoded_digest = digest.replace(':', "%3A");
    let encoded_from = REPO.replace('/', "%2F");
    registry
        .call(
            Method::POST,
            &format!("/v2/target/blobs/uploads/?mount={encoded_digest}&from={encoded_from}"),
        )
        .await
        .assert_blob_created("target", &digest);
}

#[tokio::test]
async fn mount_without_the_blob_in_the_source_opens_a_session() {
    let bytes = content("not mounted", 40);
    let (registry, _) = registry_with_blob(&bytes).await;
    let missing = sha256(b"missing from the source");
    let paths = [
        format!("/v2/target/app/blobs/uploads/?mount={missing}&from={REPO}"),
        format!("/v2/target/app/blobs/uploads/?mount={missing}&from=unknown/source"),
        format!("/v2/target/app/blobs/uploads/?mount={}", sha256(&bytes)),
    ];
    for path in paths {
        let reply = registry.call(Method::POST, &path).await;
        reply.assert_upload_state(202, "target/app", "0-0");
        assert!(
            reply.header("docker-content-digest").is_none(),
            "{path}: {reply}"
        );
    }
    registry
        .head(&format!("/v2/target/app/blobs/{}", sha256(&bytes)))
        .await
        .assert_head_error(404);

    // The fresh session works like any other.
    let reply = registry
        .call(
            Method::POST,
            &format!("/v2/target/app/blobs/uploads/?mount={missing}&from={REPO}"),
        )
        .await;
    let digest = sha256(&bytes);
    registry
        .close_upload_with(&reply.location(), &digest, &bytes)
        .await
        .assert_blob_created("target/app", &digest);
}

#[tokio::test]
async fn mount_arguments_are_validated() {
    let registry = TestRegistry::start().await;
    let digest = sha256(b"x");
    registry
        .call(
            Method::POST,
            &format!("/v2/target/blobs/uploads/?mount={digest}&from=Bad/Name"),
        )
        .await
        .assert_error(400, "NAME_INVALID");
    registry
        .call(
            Method::POST,
            "/v2/target/blobs/uploads/?mount=sha256:abc&from=source",
        )
        .await
        .assert_error(400, "DIGEST_INVALID");
}

#[tokio::test]
async fn a_large_blob_in_uneven_chunks_round_trips() {
    let registry = TestRegistry::start().await;
    let bytes = content("large", 6 * 1024 * 1024 + 12_345);
    let digest = sha256(&bytes);
    let mut location = registry.open_session(REPO).await;
    let mut offset = 0;
    for size in [1, 65_535, 1024 * 1024, 3 * 1024 * 1024 + 7, 17] {
        let chunk = &bytes[offset..offset + size];
        let reply = registry.patch_chunk(&location, offset as u64, chunk).await;
        offset += size;
        reply.assert_upload_state(202, REPO, &format!("0-{}", offset - 1));
        location = reply.location();
    }
    let rest = bytes[offset..]
        .chunks(256 * 1024)
        .map(<[u8]>::to_vec)
        .collect();
    let reply = registry.patch_streamed(&location, rest).await;
    reply.assert_upload_state(202, REPO, &format!("0-{}", bytes.len() - 1));
    registry
        .close_upload(&reply.location(), &digest)
        .await
        .assert_blob_created(REPO, &digest);

    let path = format!("/v2/{REPO}/blobs/{digest}");
    let get = registry.get(&path).await;
    get.assert_status(200);
    assert_eq!(get.content_length(), bytes.len() as u64);
    assert!(
        get.body.as_ref() == bytes.as_slice(),
        "the blob reads back intact"
    );
    // A range across the boundary of two chunks.
    let start = 65_536 - 10;
    let reply = registry
        .get_with_range(&path, &format!("bytes={start}-{}", start + 19))
        .await;
    reply.assert_status(206);
    assert_eq!(reply.body.as_ref(), &bytes[start..start + 20]);
}
