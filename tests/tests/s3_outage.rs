//! The S3 server stops in the middle of a push: the client gets a retryable OCI error, the
//! session stays as it was, no partial blob appears, and once S3 is back the same session
//! completes.
//!
//! Alone in its test binary, because it stops the shared Garage node; ignored unless the
//! services run (`scripts/test-all.sh` runs it).

use berth_tests::aws::{AwsSandbox, GarageNode};
use berth_tests::{TestRegistry, chunk_range, content, sha256};

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Garage and DynamoDB Local: scripts/test-all.sh"]
async fn a_push_survives_an_s3_outage() {
    let garage = GarageNode::from_env();
    let sandbox = AwsSandbox::new().await;
    let registry = TestRegistry::start_on(sandbox.storage()).await;
    let repo = "outage/app";
    let bytes = content("through the outage", 11 * MIB);
    let (first, second) = bytes.split_at(9 * MIB);
    let location = registry.open_session(repo).await;
    registry
        .patch_chunk(&location, 0, first)
        .await
        .assert_upload_state(202, repo, &chunk_range(0, first.len()));

    let outage = garage.outage();
    let refused = registry
        .patch_chunk(&location, first.len() as u64, second)
        .await;
    refused.assert_error(503, "UNAVAILABLE");
    let reply = refused.to_string();
    for secret in [
        sandbox.bucket.as_str(),
        sandbox.prefix.as_str(),
        "127.0.0.1",
    ] {
        assert!(
            !reply.contains(secret),
            "the reply reveals {secret:?}: {reply}"
        );
    }
    // The session is unchanged, and closing it now (as a blob of what it holds) fails
    // without publishing anything.
    registry
        .get(&location)
        .await
        .assert_upload_state(204, repo, &chunk_range(0, first.len()));
    let partial = sha256(first);
    registry
        .close_upload(&location, &partial)
        .await
        .assert_error(503, "UNAVAILABLE");
    registry
        .head(&format!("/v2/{repo}/blobs/{partial}"))
        .await
        .assert_head_error(404);
    outage.end();

    assert_eq!(sandbox.keys("blobs/").await, Vec::<String>::new());
    registry
        .get(&location)
        .await
        .assert_upload_state(204, repo, &chunk_range(0, first.len()));
    registry
        .patch_chunk(&location, first.len() as u64, second)
        .await
        .assert_upload_state(202, repo, &chunk_range(0, bytes.len()));
    let digest = sha256(&bytes);
    registry
        .close_upload(&location, &digest)
        .await
        .assert_blob_created(repo, &digest);

    let redirect = registry.get(&format!("/v2/{repo}/blobs/{digest}")).await;
    redirect.assert_status(307);
    let (status, served) = AwsSandbox::fetch(&redirect.location()).await;
    assert_eq!(status, 200);
    assert!(served == bytes, "the blob holds every byte, once");
    assert_eq!(sandbox.keys("blobs/").await, [sandbox.blob_key(&digest)]);
    assert_eq!(sandbox.keys("uploads/").await, Vec::<String>::new());
    sandbox.clear().await;
}
