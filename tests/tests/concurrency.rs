//! Requests racing on one upload session, and concurrent pushes of the same content.

use berth_tests::{
    LAST_CHUNK, Method, Reply, TestRegistry, chunk_range, content, encode_chunk, request_head,
    sha256,
};

const REPO: &str = "race/app";

/// A request that may be refused before the server reads its body. It asks for the
/// connection to be closed afterwards, so that no later request depends on how the server
/// treats a connection whose request body it left unread (see the keep-alive test in
/// uploads.rs).
async fn send_once(registry: &TestRegistry, request: reqwest::RequestBuilder) -> Reply {
    registry.send(request.header("Connection", "close")).await
}

async fn patch_once(registry: &TestRegistry, location: &str, start: u64, bytes: &[u8]) -> Reply {
    let request = registry
        .request(Method::PATCH, location)
        .header("Content-Range", chunk_range(start, bytes.len()))
        .body(bytes.to_vec());
    send_once(registry, request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_patches_racing_for_the_same_range_one_wins() {
    let registry = TestRegistry::start().await;
    for round in 0..12 {
        let location = registry.open_session(REPO).await;
        let first = content(&format!("first {round}"), 64 * 1024);
        let second = content(&format!("second {round}"), 64 * 1024);
        let (a, b) = tokio::join!(
            patch_once(&registry, &location, 0, &first),
            patch_once(&registry, &location, 0, &second),
        );
        let (winner, loser, bytes) = match (a.status, b.status) {
            (202, 416) => (a, b, first),
            (416, 202) => (b, a, second),
            _ => panic!("round {round}: expected one 202 and one 416, got {a} and {b}"),
        };
        winner.assert_upload_state(202, REPO, "0-65535");
        loser.assert_error(416, "RANGE_INVALID");
        assert_eq!(loser.location(), location, "round {round}");
        let range = loser.required_header("range");
        assert!(
            range == "0-0" || range == "0-65535",
            "round {round}: the loser sees the upload before or after the winner: {loser}"
        );

        registry
            .get(&location)
            .await
            .assert_upload_state(204, REPO, "0-65535");
        let digest = sha256(&bytes);
        registry
            .close_upload(&location, &digest)
            .await
            .assert_blob_created(REPO, &digest);
        let get = registry.get(&format!("/v2/{REPO}/blobs/{digest}")).await;
        assert_eq!(get.body.as_ref(), bytes.as_slice(), "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_on_a_session_that_is_being_written_are_416() {
    let registry = TestRegistry::start_with_small_receive_buffer().await;
    let location = registry.open_session(REPO).await;
    let head_part = content("held open", 2 * 1024 * 1024);
    let tail_part = content("sent last", 1000);

    // A streamed PATCH whose body stops midway. Both ends have small socket buffers, so
    // once the first part is written the server has read most of it: the PATCH is inside
    // the upload, holding the session.
    let mut held = registry.connect_raw_small_send_buffer().await;
    let mut head = request_head("PATCH", &location, registry.addr());
    head.push_str("Transfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n");
    held.send(head.as_bytes()).await;
    held.send(&encode_chunk(&head_part)).await;

    let intruder = futures_util::stream::iter([Ok::<_, std::io::Error>(b"intruder".to_vec())]);
    let reply = send_once(
        &registry,
        registry
            .request(Method::PATCH, &location)
            .body(reqwest::Body::wrap_stream(intruder)),
    )
    .await;
    reply.assert_error(416, "RANGE_INVALID");
    assert_eq!(reply.location(), location);
    assert_eq!(reply.header("range"), Some("0-0"), "{reply}");

    let reply = patch_once(&registry, &location, 0, b"intruder").await;
    reply.assert_error(416, "RANGE_INVALID");

    let digest = sha256(b"intruder");
    let reply = send_once(
        &registry,
        registry
            .request(Method::PUT, &format!("{location}?digest={digest}"))
            .body(b"intruder".to_vec()),
    )
    .await;
    reply.assert_error(416, "RANGE_INVALID");

    // Reading the status does not take the session.
    registry
        .get(&location)
        .await
        .assert_upload_state(204, REPO, "0-0");

    held.send(&encode_chunk(&tail_part)).await;
    held.send(LAST_CHUNK).await;
    let total = head_part.len() + tail_part.len();
    let reply = held.read_response(false).await;
    reply.assert_upload_state(202, REPO, &format!("0-{}", total - 1));

    let mut bytes = head_part;
    bytes.extend_from_slice(&tail_part);
    let digest = sha256(&bytes);
    registry
        .close_upload(&location, &digest)
        .await
        .assert_blob_created(REPO, &digest);
    let get = registry.get(&format!("/v2/{REPO}/blobs/{digest}")).await;
    get.assert_status(200);
    assert!(
        get.body.as_ref() == bytes.as_slice(),
        "the blob holds only the held PATCH's bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_of_the_same_blob_all_succeed() {
    let registry = TestRegistry::start().await;
    let bytes = content("shared layer", 200 * 1024);
    let digest = sha256(&bytes);
    let uploads = (0..6).map(|i| {
        let registry = &registry;
        let bytes = &bytes;
        let digest = &digest;
        async move {
            let repo = if i % 2 == 0 { REPO } else { "race/other" };
            if i < 3 {
                registry.post_monolithic(repo, digest, bytes).await
            } else {
                let location = registry.open_session(repo).await;
                let location = registry
                    .patch_chunk(&location, 0, bytes)
                    .await
                    .assert_status(202)
                    .location();
                registry.close_upload(&location, digest).await
            }
        }
    });
    for reply in futures_util::future::join_all(uploads).await {
        reply.assert_status(201);
    }
    for repo in [REPO, "race/other"] {
        let get = registry.get(&format!("/v2/{repo}/blobs/{digest}")).await;
        get.assert_status(200);
        assert!(get.body.as_ref() == bytes.as_slice(), "{repo}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tag_pushes_leave_one_consistent_tag() {
    let registry = TestRegistry::start().await;
    let images: Vec<_> = (0..4)
        .map(|i| berth_tests::Image::oci(&format!("contender {i}")))
        .collect();
    for image in &images {
        registry.push_image(REPO, &image.digest(), image).await;
    }
    let pushes = images.iter().map(|image| {
        registry.put_manifest(REPO, "latest", Some(&image.media_type), &image.manifest)
    });
    for reply in futures_util::future::join_all(pushes).await {
        reply.assert_status(201);
    }
    let get = registry.get(&format!("/v2/{REPO}/manifests/latest")).await;
    get.assert_status(200);
    let digest = get.required_header("docker-content-digest");
    assert_eq!(
        digest,
        sha256(&get.body),
        "the tag's digest matches its bytes"
    );
    assert!(images.iter().any(|image| image.digest() == digest));
    let tags = registry
        .call(Method::GET, &format!("/v2/{REPO}/tags/list"))
        .await;
    assert_eq!(tags.string_list("tags"), ["latest"]);
}
