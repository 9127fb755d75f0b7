//! The API version check and what every response carries.

use berth_tests::{Method, TestRegistry};

#[tokio::test]
async fn version_check_answers_200_with_the_api_version() {
    let registry = TestRegistry::start().await;
    for path in ["/v2/", "/v2"] {
        let reply = registry.get(path).await;
        reply.assert_status(200).assert_api_version();
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{path}"
        );
        assert_eq!(reply.json(), serde_json::json!({}), "{path}");
    }
}

#[tokio::test]
async fn version_check_answers_head() {
    let registry = TestRegistry::start().await;
    let reply = registry.head("/v2/").await;
    reply.assert_status(200).assert_api_version();
    assert!(reply.body.is_empty());
}

#[tokio::test]
async fn errors_carry_the_api_version_header_too() {
    let registry = TestRegistry::start().await;
    registry
        .get("/v2/nothing/manifests/latest")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    registry
        .call(Method::POST, "/v2/")
        .await
        .assert_error(405, "UNSUPPORTED");
}

#[tokio::test]
async fn a_request_id_is_returned_and_a_client_one_is_echoed() {
    let registry = TestRegistry::start().await;
    let reply = registry.get("/v2/").await;
    assert!(
        reply
            .header("x-request-id")
            .is_some_and(|id| !id.is_empty())
    );
    let reply = registry
        .send(
            registry
                .request(Method::GET, "/v2/")
                .header("X-Request-Id", "trace-me-42"),
        )
        .await;
    assert_eq!(reply.header("x-request-id"), Some("trace-me-42"));
}
