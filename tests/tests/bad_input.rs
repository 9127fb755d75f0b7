//! Bad input of every kind is refused with the right OCI error, never a 500: invalid names
//! and digests anywhere they appear, unknown paths and wrong methods.

use berth_tests::{Method, Reply, TestRegistry, sha256};

const D: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SESSION: &str = "0f9c1d52-3c1a-4d2b-9a53-6a3c1f3b2e10";

/// Repository names as they appear in a raw path, each invalid.
fn invalid_names() -> Vec<String> {
    vec![
        "a/../b".into(),
        "..".into(),
        "a/..".into(),
        "a/./b".into(),
        ".".into(),
        "Upper".into(),
        "team/App".into(),
        "a%2Fb".into(),
        "a%2fb".into(),
        "a//b".into(),
        String::new(),
        "a/".into(),
        "/a".into(),
        "-a".into(),
        "a-".into(),
        "a___b".into(),
        "a..b".into(),
        "a%20b".into(),
        "a%ffb".into(),
        "%C3%A4".into(),
        "a".repeat(256),
    ]
}

/// Each endpoint shape with its method, `{name}` standing for the repository name.
const NAMED_ENDPOINTS: [(&str, &str); 12] = [
    ("GET", "/v2/{name}/manifests/latest"),
    ("HEAD", "/v2/{name}/manifests/latest"),
    ("PUT", "/v2/{name}/manifests/latest"),
    ("DELETE", "/v2/{name}/manifests/latest"),
    ("GET", "/v2/{name}/blobs/{D}"),
    ("HEAD", "/v2/{name}/blobs/{D}"),
    ("DELETE", "/v2/{name}/blobs/{D}"),
    ("POST", "/v2/{name}/blobs/uploads/"),
    ("GET", "/v2/{name}/blobs/uploads/{SESSION}"),
    ("PATCH", "/v2/{name}/blobs/uploads/{SESSION}"),
    ("GET", "/v2/{name}/tags/list"),
    ("GET", "/v2/{name}/referrers/{D}"),
];

fn assert_refused(reply: &Reply, method: &str, status: u16, code: &str) {
    if method == "HEAD" {
        reply.assert_head_error(status);
    } else {
        reply.assert_error(status, code);
    }
}

#[tokio::test]
async fn invalid_repository_names_are_400_name_invalid() {
    let registry = TestRegistry::start().await;
    for name in invalid_names() {
        for (method, template) in NAMED_ENDPOINTS {
            let path = template
                .replace("{name}", &name)
                .replace("{D}", D)
                .replace("{SESSION}", SESSION);
            let body: &[u8] = if method == "PUT" { b"{}" } else { b"" };
            let reply = registry.raw(method, &path, body).await;
            assert_eq!(reply.status, 400, "{method} {path}: {reply}");
            assert_refused(&reply, method, 400, "NAME_INVALID");
        }
    }
}

#[tokio::test]
async fn an_invalid_mount_source_is_name_invalid() {
    let registry = TestRegistry::start().await;
    for from in ["a/../b", "Upper", "a//b", "", "a%2F%2Fb"] {
        let path = format!("/v2/target/blobs/uploads/?mount={D}&from={from}");
        let reply = registry.raw("POST", &path, b"").await;
        reply.assert_error(400, "NAME_INVALID");
    }
}

/// Malformed digests, each with a `:` so that a manifest reference reads it as a digest.
fn malformed_digests() -> Vec<String> {
    vec![
        "sha256:abc".into(),
        "sha256:".into(),
        format!("sha256:{}", "A".repeat(64)),
        format!("sha256:{}", "g".repeat(64)),
        format!("sha256:{}", "a".repeat(63)),
        format!("sha256:{}", "a".repeat(65)),
        format!("sha512:{}", "a".repeat(64)),
        format!("sha384:{}", "a".repeat(96)),
        format!("md5:{}", "a".repeat(32)),
        format!("SHA256:{}", "a".repeat(64)),
        format!(":{}", "a".repeat(64)),
        format!("sha256::{}", "a".repeat(64)),
        format!("sha256:{}:", "a".repeat(64)),
        format!("sha256:{}%00", "a".repeat(63)),
        format!("sha256%3A{}", "g".repeat(64)),
    ]
}

/// Malformed digests in paths are 400 DIGEST_INVALID, except where a manifest is read: no
/// manifest can exist under a reference that is neither a tag nor a digest, so reading one
/// is 404 MANIFEST_UNKNOWN.
#[tokio::test]
async fn malformed_digests_in_paths_are_400_digest_invalid() {
    let registry = TestRegistry::start().await;
    registry
        .push_seeded_image("repo", "v1", "so the repository exists")
        .await;
    let invalid = (400, "DIGEST_INVALID");
    let unknown = (404, "MANIFEST_UNKNOWN");
    for digest in malformed_digests() {
        for (method, template, (status, code)) in [
            ("GET", "/v2/repo/blobs/{d}", invalid),
            ("HEAD", "/v2/repo/blobs/{d}", invalid),
            ("DELETE", "/v2/repo/blobs/{d}", invalid),
            ("GET", "/v2/repo/manifests/{d}", unknown),
            ("HEAD", "/v2/repo/manifests/{d}", unknown),
            ("PUT", "/v2/repo/manifests/{d}", invalid),
            ("DELETE", "/v2/repo/manifests/{d}", invalid),
            ("GET", "/v2/repo/referrers/{d}", invalid),
            ("GET", "/v2/unknown/blobs/{d}", invalid),
            ("GET", "/v2/unknown/manifests/{d}", unknown),
        ] {
            let path = template.replace("{d}", &digest);
            let body: &[u8] = if method == "PUT" { b"{}" } else { b"" };
            let reply = registry.raw(method, &path, body).await;
            assert_eq!(reply.status, status, "{method} {path}: {reply}");
            assert_refused(&reply, method, status, code);
        }
    }
    for tag in ["-leading-dash", ".leading-dot", "a+b", &"t".repeat(129)] {
        for method in ["GET", "HEAD"] {
            let reply = registry
                .raw(method, &format!("/v2/repo/manifests/{tag}"), b"")
                .await;
            assert_refused(&reply, method, 404, "MANIFEST_UNKNOWN");
        }
    }
    // A blob path segment is always a digest, even without a colon.
    for digest in ["latest", "sha256", &"a".repeat(64)] {
        for path in [
            format!("/v2/repo/blobs/{digest}"),
            format!("/v2/repo/referrers/{digest}"),
        ] {
            registry
                .get(&path)
                .await
                .assert_error(400, "DIGEST_INVALID");
        }
    }
}

#[tokio::test]
async fn malformed_digests_in_queries_are_400_digest_invalid() {
    let registry = TestRegistry::start().await;
    let session = registry.open_session("repo").await;
    registry
        .patch_chunk(&session, 0, b"kept")
        .await
        .assert_status(202);
    for digest in malformed_digests() {
        for (method, path) in [
            ("POST", format!("/v2/repo/blobs/uploads/?digest={digest}")),
            (
                "POST",
                format!("/v2/repo/blobs/uploads/?mount={digest}&from=other"),
            ),
            ("PUT", format!("{session}?digest={digest}")),
        ] {
            let reply = registry.raw(method, &path, b"").await;
            assert_eq!(reply.status, 400, "{method} {path}: {reply}");
            reply.assert_error(400, "DIGEST_INVALID");
        }
    }
    // The session was not disturbed by the refused closing PUTs.
    registry
        .get(&session)
        .await
        .assert_upload_state(204, "repo", "0-3");
    let catalog = registry.get("/v2/_catalog").await;
    assert!(catalog.string_list("repositories").is_empty(), "{catalog}");
}

/// A percent escape that does not decode to UTF-8, or decodes to `/`, in the digest of
/// `/blobs/<digest>` and `/referrers/<digest>` is a malformed digest (DIGEST_INVALID), not a
/// malformed name; a manifest read there finds nothing (MANIFEST_UNKNOWN).
#[tokio::test]
async fn bad_percent_escapes_in_a_digest_segment_are_digest_invalid() {
    let registry = TestRegistry::start().await;
    let hex = "a".repeat(62);
    for digest in [format!("sha256:{hex}%ff"), format!("sha256:{hex}%2F")] {
        for path in [
            format!("/v2/repo/blobs/{digest}"),
            format!("/v2/repo/referrers/{digest}"),
        ] {
            let reply = registry.raw("GET", &path, b"").await;
            reply.assert_error(400, "DIGEST_INVALID");
        }
        registry
            .raw("GET", &format!("/v2/repo/manifests/{digest}"), b"")
            .await
            .assert_error(404, "MANIFEST_UNKNOWN");
        registry
            .raw("DELETE", &format!("/v2/repo/manifests/{digest}"), b"")
            .await
            .assert_error(400, "DIGEST_INVALID");
    }
}

#[tokio::test]
async fn unknown_paths_are_404_not_found() {
    let registry = TestRegistry::start().await;
    for path in [
        "/",
        "/favicon.ico",
        "/v1/",
        "/v3/",
        "/v2x",
        "/v2/repo",
        "/v2/repo/blobs",
        "/v2/repo/manifests",
        "/v2/repo/unknown/x",
        "/v2/repo/tags/list/more",
        "/v2/_catalog/more",
        "/v2/repo/referrers",
    ] {
        for method in ["GET", "PUT", "DELETE"] {
            let body: &[u8] = if method == "PUT" { b"x" } else { b"" };
            let reply = registry.raw(method, path, body).await;
            assert_eq!(reply.status, 404, "{method} {path}: {reply}");
            reply.assert_error(404, "NOT_FOUND");
        }
    }
}

/// Methods an endpoint does not serve, with the methods it does.
fn wrong_methods() -> Vec<(Method, String)> {
    let session = format!("/v2/repo/blobs/uploads/{SESSION}");
    let mut cases = Vec::new();
    for method in [
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ] {
        cases.push((method, "/v2/".to_owned()));
    }
    for method in [Method::POST, Method::PATCH, Method::OPTIONS] {
        cases.push((method, "/v2/repo/manifests/latest".to_owned()));
    }
    for method in [Method::POST, Method::PUT, Method::PATCH] {
        cases.push((method, format!("/v2/repo/blobs/{D}")));
    }
    for method in [Method::GET, Method::PUT, Method::PATCH, Method::DELETE] {
        cases.push((method, "/v2/repo/blobs/uploads/".to_owned()));
    }
    cases.push((Method::POST, session));
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        cases.push((method.clone(), format!("/v2/repo/referrers/{D}")));
        cases.push((method.clone(), "/v2/repo/tags/list".to_owned()));
        cases.push((method, "/v2/_catalog".to_owned()));
    }
    cases
}

#[tokio::test]
async fn wrong_methods_are_405_unsupported() {
    let registry = TestRegistry::start().await;
    for (method, path) in wrong_methods() {
        let reply = registry.call(method.clone(), &path).await;
        assert_eq!(reply.status, 405, "{method} {path}: {reply}");
        reply.assert_error(405, "UNSUPPORTED");
    }
}

/// SERVER BUG (shared/http/src/response.rs, `ApiError::into_response`, and
/// shared/http/src/endpoint.rs, `unsupported`): RFC 9110 section 15.5.6 requires a 405
/// response to carry an `Allow` header listing the methods the resource supports; Berth
/// sends none.
#[tokio::test]
async fn a_405_names_the_allowed_methods() {
    let registry = TestRegistry::start().await;
    for (method, path) in wrong_methods() {
        let reply = registry.call(method.clone(), &path).await;
        let allow = reply.header("allow");
        assert!(
            allow.is_some_and(|allow| !allow.contains(method.as_str())),
            "{method} {path}: no Allow header, or one naming the refused method: {reply}"
        );
    }
}

#[tokio::test]
async fn a_mount_needs_a_digest_and_a_source_that_parse() {
    let registry = TestRegistry::start().await;
    registry
        .call(Method::POST, "/v2/repo/blobs/uploads/?mount=&from=other")
        .await
        .assert_error(400, "DIGEST_INVALID");
    registry
        .call(Method::POST, "/v2/repo/blobs/uploads/?digest=")
        .await
        .assert_error(400, "DIGEST_INVALID");
}

#[tokio::test]
async fn nothing_is_created_by_refused_requests() {
    let registry = TestRegistry::start().await;
    for name in invalid_names() {
        let path = format!("/v2/{name}/blobs/uploads/?digest={}", sha256(b"x"));
        registry.raw("POST", &path, b"x").await.assert_status(400);
    }
    let catalog = registry.get("/v2/_catalog").await;
    catalog.assert_status(200);
    assert!(catalog.string_list("repositories").is_empty(), "{catalog}");
}
