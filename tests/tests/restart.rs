//! Local mode keeps its state on disk: a restarted registry serves what it stored before and
//! resumes upload sessions where they stopped.

use berth_tests::{TestRegistry, content, descriptor, media, sha256};
use serde_json::json;

const REPO: &str = "durable/app";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_restart() {
    let mut registry = TestRegistry::start().await;
    let image = registry.push_seeded_image(REPO, "v1", "durable").await;
    registry.push_blob(REPO, b"{}").await;
    let referrer = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "artifactType": "application/vnd.example.note",
        "config": descriptor(media::OCI_EMPTY, b"{}"),
        "layers": [descriptor(media::OCI_EMPTY, b"{}")],
        "subject": image.descriptor(),
    })
    .to_string()
    .into_bytes();
    registry
        .put_manifest(
            REPO,
            &sha256(&referrer),
            Some(media::OCI_MANIFEST),
            &referrer,
        )
        .await
        .assert_status(201);

    let bytes = content("resumed after restart", 3000);
    let digest = sha256(&bytes);
    let location = registry.open_session(REPO).await;
    registry
        .patch_chunk(&location, 0, &bytes[..1200])
        .await
        .assert_upload_state(202, REPO, "0-1199");

    registry.restart().await;

    let get = registry.get(&format!("/v2/{REPO}/manifests/v1")).await;
    get.assert_status(200);
    assert_eq!(get.body.as_ref(), image.manifest.as_slice());
    let layer = registry
        .get(&format!("/v2/{REPO}/blobs/{}", sha256(&image.layers[0])))
        .await;
    assert_eq!(layer.body.as_ref(), image.layers[0].as_slice());
    assert_eq!(
        registry
            .get(&format!("/v2/{REPO}/tags/list"))
            .await
            .string_list("tags"),
        ["v1"]
    );
    assert_eq!(
        registry
            .get("/v2/_catalog")
            .await
            .string_list("repositories"),
        [REPO]
    );
    let referrers = registry
        .get(&format!("/v2/{REPO}/referrers/{}", image.digest()))
        .await
        .json();
    assert_eq!(referrers["manifests"][0]["digest"], sha256(&referrer));

    registry
        .get(&location)
        .await
        .assert_upload_state(204, REPO, "0-1199");
    registry
        .patch_chunk(&location, 1200, &bytes[1200..])
        .await
        .assert_upload_state(202, REPO, "0-2999");
    registry
        .close_upload(&location, &digest)
        .await
        .assert_blob_created(REPO, &digest);
    let blob = registry.get(&format!("/v2/{REPO}/blobs/{digest}")).await;
    assert_eq!(blob.body.as_ref(), bytes.as_slice());
}
