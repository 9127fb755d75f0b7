//! Manifests: pushing by tag and by digest, reading back the exact bytes, every supported
//! kind, every refusal, tags moving and deletion.

use berth_tests::{
    Image, Method, Reply, TestRegistry, content, descriptor, index, media, platform_descriptor,
    sha256, sha512,
};
use serde_json::json;

const REPO: &str = "shop/web";

/// Asserts GET and HEAD of `reference` answer `bytes` as `media_type`.
async fn assert_manifest(
    registry: &TestRegistry,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) {
    let path = format!("/v2/{repo}/manifests/{reference}");
    let digest = sha256(bytes);
    let check = |reply: &Reply| {
        reply.assert_status(200).assert_api_version();
        assert_eq!(
            reply.header("content-type"),
            Some(media_type),
            "{reference}: {reply}"
        );
        assert_eq!(
            reply.content_length(),
            bytes.len() as u64,
            "{reference}: {reply}"
        );
        assert_eq!(
            reply.header("docker-content-digest"),
            Some(digest.as_str()),
            "{reference}: {reply}"
        );
    };
    let get = registry.get(&path).await;
    check(&get);
    assert_eq!(get.body.as_ref(), bytes, "{reference}: the bytes as pushed");
    let head = registry.head(&path).await;
    check(&head);
    assert!(head.body.is_empty());
}

fn assert_manifest_created(reply: &Reply, repo: &str, bytes: &[u8]) {
    let digest = sha256(bytes);
    reply.assert_status(201).assert_api_version();
    assert_eq!(
        reply.location(),
        format!("/v2/{repo}/manifests/{digest}"),
        "{reply}"
    );
    assert_eq!(
        reply.header("docker-content-digest"),
        Some(digest.as_str()),
        "{reply}"
    );
}

async fn push_blobs(registry: &TestRegistry, repo: &str, image: &Image) {
    registry.push_blob(repo, &image.config).await;
    for layer in &image.layers {
        registry.push_blob(repo, layer).await;
    }
}

async fn tags(registry: &TestRegistry, repo: &str) -> Vec<String> {
    let reply = registry.get(&format!("/v2/{repo}/tags/list")).await;
    reply.assert_status(200);
    reply.string_list("tags")
}

#[tokio::test]
async fn put_by_tag_then_get_and_head_by_tag_and_digest() {
    let registry = TestRegistry::start().await;
    let image = Image::oci("by tag");
    push_blobs(&registry, REPO, &image).await;
    let reply = registry
        .put_manifest(REPO, "v1", Some(media::OCI_MANIFEST), &image.manifest)
        .await;
    assert_manifest_created(&reply, REPO, &image.manifest);
    assert!(reply.header("oci-subject").is_none());

    assert_manifest(&registry, REPO, "v1", media::OCI_MANIFEST, &image.manifest).await;
    assert_manifest(
        &registry,
        REPO,
        &image.digest(),
        media::OCI_MANIFEST,
        &image.manifest,
    )
    .await;
    assert_eq!(tags(&registry, REPO).await, ["v1"]);
}

#[tokio::test]
async fn put_by_digest_stores_no_tag() {
    let registry = TestRegistry::start().await;
    let image = Image::oci("by digest");
    push_blobs(&registry, REPO, &image).await;
    let reply = registry
        .put_manifest(
            REPO,
            &image.digest(),
            Some(media::OCI_MANIFEST),
            &image.manifest,
        )
        .await;
    assert_manifest_created(&reply, REPO, &image.manifest);
    assert_manifest(
        &registry,
        REPO,
        &image.digest(),
        media::OCI_MANIFEST,
        &image.manifest,
    )
    .await;
    assert!(tags(&registry, REPO).await.is_empty());
}

#[tokio::test]
async fn put_by_sha512_digest() {
    let registry = TestRegistry::start().await;
    let image = Image::oci("sha512 reference");
    push_blobs(&registry, REPO, &image).await;
    let digest = sha512(&image.manifest);
    let reply = registry
        .put_manifest(REPO, &digest, Some(media::OCI_MANIFEST), &image.manifest)
        .await;
    reply.assert_status(201);
    assert_eq!(reply.location(), format!("/v2/{REPO}/manifests/{digest}"));
    assert_eq!(reply.header("docker-content-digest"), Some(digest.as_str()));
    let get = registry
        .get(&format!("/v2/{REPO}/manifests/{digest}"))
        .await;
    get.assert_status(200);
    assert_eq!(get.body.as_ref(), image.manifest.as_slice());
    assert_eq!(get.header("docker-content-digest"), Some(digest.as_str()));
}

#[tokio::test]
async fn raw_bytes_are_returned_exactly_as_sent() {
    let registry = TestRegistry::start().await;
    let image = Image::oci("odd bytes");
    push_blobs(&registry, REPO, &image).await;
    let config = &image.config;
    let layer = &image.layers[0];
    // Keys out of the usual order, tabs, CRLFs, escaped characters, trailing whitespace.
    let manifest = format!(
        "{{\r\n\t\"layers\" :[ {{\"size\":{},\"digest\":  \"{}\",\"mediaType\":\"{}\"}} ],\n\
         \"annotations\":{{\"note\":\"caf\\u00e9 \\\"quoted\\\" \\/ slash\"}},\n\
         \"config\":{{\"digest\":\"{}\",\"mediaType\":\"{}\",   \"size\":{}}},\
         \"mediaType\":\"{}\",\"schemaVersion\":  2}}  \n\n",
        layer.len(),
        sha256(layer),
        media::OCI_LAYER,
        sha256(config),
        media::OCI_CONFIG,
        config.len(),
        media::OCI_MANIFEST,
    );
    let bytes = manifest.into_bytes();
    let reply = registry
        .put_manifest(REPO, "odd", Some(media::OCI_MANIFEST), &bytes)
        .await;
    assert_manifest_created(&reply, REPO, &bytes);
    assert_manifest(&registry, REPO, "odd", media::OCI_MANIFEST, &bytes).await;
    assert_manifest(
        &registry,
        REPO,
        &sha256(&bytes),
        media::OCI_MANIFEST,
        &bytes,
    )
    .await;
}

#[tokio::test]
async fn content_type_may_be_absent_generic_or_carry_parameters() {
    let registry = TestRegistry::start().await;
    let image = Image::oci("content types");
    push_blobs(&registry, REPO, &image).await;
    let with_parameters = format!("{}; charset=utf-8", media::OCI_MANIFEST);
    for (tag, content_type) in [
        ("none", None),
        ("generic", Some("application/json")),
        ("parameters", Some(with_parameters.as_str())),
    ] {
        let reply = registry
            .put_manifest(REPO, tag, content_type, &image.manifest)
            .await;
        assert_manifest_created(&reply, REPO, &image.manifest);
        assert_manifest(&registry, REPO, tag, media::OCI_MANIFEST, &image.manifest).await;
    }
}

#[tokio::test]
async fn the_media_type_may_come_from_the_content_type_alone() {
    let registry = TestRegistry::start().await;
    let image = Image::oci("no media type field");
    push_blobs(&registry, REPO, &image).await;
    let mut manifest = image.manifest_json();
    manifest
        .as_object_mut()
        .expect("an object")
        .remove("mediaType");
    let bytes = manifest.to_string().into_bytes();
    let reply = registry
        .put_manifest(REPO, "v1", Some(media::OCI_MANIFEST), &bytes)
        .await;
    assert_manifest_created(&reply, REPO, &bytes);
    assert_manifest(&registry, REPO, "v1", media::OCI_MANIFEST, &bytes).await;
}

#[tokio::test]
async fn oci_index_over_pushed_manifests() {
    let registry = TestRegistry::start().await;
    let amd64 = Image::oci("amd64");
    let arm64 = Image::oci("arm64");
    for image in [&amd64, &arm64] {
        registry.push_image(REPO, &image.digest(), image).await;
    }
    let bytes = index(
        media::OCI_INDEX,
        &[
            platform_descriptor(&amd64, "amd64"),
            platform_descriptor(&arm64, "arm64"),
        ],
    );
    let reply = registry
        .put_manifest(REPO, "multi", Some(media::OCI_INDEX), &bytes)
        .await;
    assert_manifest_created(&reply, REPO, &bytes);
    assert_manifest(&registry, REPO, "multi", media::OCI_INDEX, &bytes).await;
}

#[tokio::test]
async fn docker_schema2_manifest_and_manifest_list() {
    let registry = TestRegistry::start().await;
    let amd64 = Image::docker("docker amd64");
    let arm64 = Image::docker("docker arm64");
    for (tag, image) in [("amd64", &amd64), ("arm64", &arm64)] {
        push_blobs(&registry, REPO, image).await;
        let reply = registry
            .put_manifest(REPO, tag, Some(media::DOCKER_MANIFEST), &image.manifest)
            .await;
        assert_manifest_created(&reply, REPO, &image.manifest);
        assert_manifest(
            &registry,
            REPO,
            tag,
            media::DOCKER_MANIFEST,
            &image.manifest,
        )
        .await;
    }
    let bytes = index(
        media::DOCKER_MANIFEST_LIST,
        &[
            platform_descriptor(&amd64, "amd64"),
            platform_descriptor(&arm64, "arm64"),
        ],
    );
    let reply = registry
        .put_manifest(REPO, "latest", Some(media::DOCKER_MANIFEST_LIST), &bytes)
        .await;
    assert_manifest_created(&reply, REPO, &bytes);
    assert_manifest(
        &registry,
        REPO,
        "latest",
        media::DOCKER_MANIFEST_LIST,
        &bytes,
    )
    .await;
}

#[tokio::test]
async fn non_distributable_layers_need_not_be_pushed() {
    let registry = TestRegistry::start().await;
    let image = Image::oci("foreign layers");
    push_blobs(&registry, REPO, &image).await;
    let mut manifest = image.manifest_json();
    let layers = manifest["layers"].as_array_mut().expect("layers");
    layers.push(descriptor(
        media::OCI_LAYER_NONDISTRIBUTABLE,
        &content("never pushed", 10),
    ));
    layers.push(descriptor(
        media::DOCKER_FOREIGN_LAYER,
        &content("never pushed either", 10),
    ));
    let bytes = manifest.to_string().into_bytes();
    let reply = registry
        .put_manifest(REPO, "foreign", Some(media::OCI_MANIFEST), &bytes)
        .await;
    assert_manifest_created(&reply, REPO, &bytes);
    assert_manifest(&registry, REPO, "foreign", media::OCI_MANIFEST, &bytes).await;
}

#[tokio::test]
async fn a_subject_is_reported_in_oci_subject() {
    let registry = TestRegistry::start().await;
    let subject = registry.push_seeded_image(REPO, "v1", "subject").await;
    let artifact = Image::oci("artifact");
    push_blobs(&registry, REPO, &artifact).await;
    let mut manifest = artifact.manifest_json();
    manifest["subject"] = subject.descriptor();
    let bytes = manifest.to_string().into_bytes();
    let reply = registry
        .put_manifest(REPO, &sha256(&bytes), Some(media::OCI_MANIFEST), &bytes)
        .await;
    assert_manifest_created(&reply, REPO, &bytes);
    assert_eq!(reply.header("oci-subject"), Some(subject.digest().as_str()));

    // The subject need not exist yet.
    let absent = Image::oci("absent subject");
    manifest["subject"] = absent.descriptor();
    let bytes = manifest.to_string().into_bytes();
    let reply = registry
        .put_manifest(REPO, "dangling", Some(media::OCI_MANIFEST), &bytes)
        .await;
    assert_manifest_created(&reply, REPO, &bytes);
    assert_eq!(reply.header("oci-subject"), Some(absent.digest().as_str()));
}

#[tokio::test]
async fn a_tag_moves_to_the_latest_push() {
    let registry = TestRegistry::start().await;
    let first = registry.push_seeded_image(REPO, "latest", "first").await;
    let second = registry.push_seeded_image(REPO, "latest", "second").await;
    assert_manifest(
        &registry,
        REPO,
        "latest",
        media::OCI_MANIFEST,
        &second.manifest,
    )
    .await;
    assert_manifest(
        &registry,
        REPO,
        &first.digest(),
        media::OCI_MANIFEST,
        &first.manifest,
    )
    .await;
    assert_eq!(tags(&registry, REPO).await, ["latest"]);

    // Moving it back to a manifest the repository already holds.
    let reply = registry
        .put_manifest(REPO, "latest", Some(media::OCI_MANIFEST), &first.manifest)
        .await;
    assert_manifest_created(&reply, REPO, &first.manifest);
    assert_manifest(
        &registry,
        REPO,
        "latest",
        media::OCI_MANIFEST,
        &first.manifest,
    )
    .await;
}

#[tokio::test]
async fn delete_by_tag_removes_only_the_tag() {
    let registry = TestRegistry::start().await;
    let image = registry.push_seeded_image(REPO, "v1", "delete tag").await;
    registry
        .put_manifest(REPO, "v2", Some(media::OCI_MANIFEST), &image.manifest)
        .await
        .assert_status(201);

    let reply = registry.delete(&format!("/v2/{REPO}/manifests/v1")).await;
    reply.assert_status(202).assert_api_version();

    registry
        .get(&format!("/v2/{REPO}/manifests/v1"))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    registry
        .head(&format!("/v2/{REPO}/manifests/v1"))
        .await
        .assert_head_error(404);
    assert_manifest(&registry, REPO, "v2", media::OCI_MANIFEST, &image.manifest).await;
    assert_manifest(
        &registry,
        REPO,
        &image.digest(),
        media::OCI_MANIFEST,
        &image.manifest,
    )
    .await;
    assert_eq!(tags(&registry, REPO).await, ["v2"]);

    registry
        .delete(&format!("/v2/{REPO}/manifests/v1"))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn delete_by_digest_removes_the_manifest_and_its_tags() {
    let registry = TestRegistry::start().await;
    let image = registry
        .push_seeded_image(REPO, "v1", "delete digest")
        .await;
    registry
        .put_manifest(REPO, "v2", Some(media::OCI_MANIFEST), &image.manifest)
        .await
        .assert_status(201);
    let other = registry.push_seeded_image(REPO, "keep", "unrelated").await;

    let by_digest = format!("/v2/{REPO}/manifests/{}", image.digest());
    registry.delete(&by_digest).await.assert_status(202);

    for reference in [image.digest().as_str(), "v1", "v2"] {
        let path = format!("/v2/{REPO}/manifests/{reference}");
        registry
            .get(&path)
            .await
            .assert_error(404, "MANIFEST_UNKNOWN");
        registry.head(&path).await.assert_head_error(404);
    }
    assert_eq!(tags(&registry, REPO).await, ["keep"]);
    assert_manifest(
        &registry,
        REPO,
        "keep",
        media::OCI_MANIFEST,
        &other.manifest,
    )
    .await;

    registry
        .delete(&by_digest)
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn unknown_manifests_are_404() {
    let registry = TestRegistry::start().await;
    registry.push_seeded_image(REPO, "v1", "exists").await;
    let digest = sha256(b"no such manifest");
    for repo in [REPO, "no/such/repo"] {
        for reference in ["nope", digest.as_str()] {
            let path = format!("/v2/{repo}/manifests/{reference}");
            registry
                .get(&path)
                .await
                .assert_error(404, "MANIFEST_UNKNOWN");
            registry.head(&path).await.assert_head_error(404);
            registry
                .delete(&path)
                .await
                .assert_error(404, "MANIFEST_UNKNOWN");
        }
    }
}

#[tokio::test]
async fn manifests_are_not_shared_between_repositories() {
    let registry = TestRegistry::start().await;
    let image = registry.push_seeded_image(REPO, "v1", "private").await;
    registry
        .get(&format!("/v2/other/repo/manifests/{}", image.digest()))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    registry
        .get("/v2/other/repo/manifests/v1")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
}

/// A push that must be refused with `status` and `code`.
struct Refusal {
    what: &'static str,
    reference: String,
    content_type: Option<String>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn refusal(
    what: &'static str,
    reference: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
) -> Refusal {
    Refusal {
        what,
        reference: reference.to_owned(),
        content_type: content_type.map(str::to_owned),
        body,
        status,
        code,
    }
}

/// Every kind of manifest push that must fail, all aimed at `tag`.
fn refusals(image: &Image, tag: &str) -> Vec<Refusal> {
    let oci = Some(media::OCI_MANIFEST);
    let manifest = image.manifest_json();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut value = manifest.clone();
        f(&mut value);
        value.to_string().into_bytes()
    };
    let missing_layer = with(&|m| {
        m["layers"]
            .as_array_mut()
            .expect("layers")
            .push(descriptor(media::OCI_LAYER, b"never pushed layer"));
    });
    let missing_config = with(&|m| m["config"] = descriptor(media::OCI_CONFIG, b"{\"never\":1}"));
    let wrong_size = with(&|m| m["layers"][0]["size"] = json!(image.layers[0].len() + 1));
    let bad_descriptor_digest = with(&|m| m["layers"][0]["digest"] = json!("sha256:abc"));
    let schema1 = json!({
        "schemaVersion": 1, "name": REPO, "tag": tag, "architecture": "amd64",
        "fsLayers": [], "history": [], "signatures": []
    })
    .to_string()
    .into_bytes();
    let missing_child = index(
        media::OCI_INDEX,
        &[Image::oci("never pushed child").descriptor()],
    );
    let docker_missing_child = index(
        media::DOCKER_MANIFEST_LIST,
        &[Image::docker("never pushed docker child").descriptor()],
    );
    let other_digest = sha256(b"some other manifest");
    vec![
        refusal(
            "schema 1, signed",
            tag,
            Some(media::DOCKER_SCHEMA1_SIGNED),
            schema1.clone(),
            400,
            "MANIFEST_INVALID",
        ),
        refusal(
            "schema 1",
            tag,
            Some(media::DOCKER_SCHEMA1),
            schema1.clone(),
            400,
            "MANIFEST_INVALID",
        ),
        refusal(
            "schema 1, no content type",
            tag,
            None,
            schema1,
            400,
            "MANIFEST_INVALID",
        ),
        refusal(
            "missing layer",
            tag,
            oci,
            missing_layer,
            400,
            "MANIFEST_BLOB_UNKNOWN",
        ),
        refusal(
            "missing config",
            tag,
            oci,
            missing_config,
            400,
            "MANIFEST_BLOB_UNKNOWN",
        ),
        refusal(
            "missing child",
            tag,
            Some(media::OCI_INDEX),
            missing_child,
            400,
            "MANIFEST_BLOB_UNKNOWN",
        ),
        refusal(
            "missing docker child",
            tag,
            Some(media::DOCKER_MANIFEST_LIST),
            docker_missing_child,
            400,
            "MANIFEST_BLOB_UNKNOWN",
        ),
        refusal(
            "wrong layer size",
            tag,
            oci,
            wrong_size,
            400,
            "MANIFEST_INVALID",
        ),
        refusal(
            "descriptor with a bad digest",
            tag,
            oci,
            bad_descriptor_digest,
            400,
            "MANIFEST_INVALID",
        ),
        refusal(
            "malformed JSON",
            tag,
            oci,
            b"{\"schemaVersion\": 2,".to_vec(),
            400,
            "MANIFEST_INVALID",
        ),
        refusal(
            "not an object",
            tag,
            oci,
            b"[1, 2, 3]".to_vec(),
            400,
            "MANIFEST_INVALID",
        ),
        refusal("empty body", tag, oci, Vec::new(), 400, "MANIFEST_INVALID"),
        refusal(
            "no schemaVersion",
            tag,
            oci,
            b"{}".to_vec(),
            400,
            "MANIFEST_INVALID",
        ),
        refusal(
            "schemaVersion 3",
            tag,
            oci,
            with(&|m| m["schemaVersion"] = json!(3)),
            400,
            "MANIFEST_INVALID",
        ),
        refusal(
            "no config",
            tag,
            oci,
            with(&|m| {
                m.as_object_mut().expect("object").remove("config");
            }),
            400,
            "MANIFEST_INVALID",
        ),
        refusal(
            "no media type anywhere",
            tag,
            None,
            with(&|m| {
                m.as_object_mut().expect("object").remove("mediaType");
            }),
            400,
            "MANIFEST_INVALID",
        ),
        refusal(
            "docker content type, OCI body",
            tag,
            Some(media::DOCKER_MANIFEST),
            image.manifest.clone(),
            400,
            "MANIFEST_INVALID",
        ),
        refusal(
            "index content type, manifest body",
            tag,
            Some(media::OCI_INDEX),
            image.manifest.clone(),
            400,
            "MANIFEST_INVALID",
        ),
        refusal(
            "unknown content type",
            tag,
            Some("text/plain"),
            image.manifest.clone(),
            400,
            "MANIFEST_INVALID",
        ),
        refusal(
            "unknown media type",
            tag,
            None,
            with(&|m| m["mediaType"] = json!("application/vnd.example.unknown+json")),
            400,
            "MANIFEST_INVALID",
        ),
        refusal(
            "digest reference mismatch",
            &other_digest,
            oci,
            image.manifest.clone(),
            400,
            "DIGEST_INVALID",
        ),
        refusal(
            "sha512 digest reference mismatch",
            &sha512(b"other"),
            oci,
            image.manifest.clone(),
            400,
            "DIGEST_INVALID",
        ),
    ]
}

#[tokio::test]
async fn refused_pushes_leave_what_was_stored_unchanged() {
    let registry = TestRegistry::start().await;
    let stored = registry.push_seeded_image(REPO, "stable", "stored").await;
    // The replacement's blobs are pushed, so only the flaw under test can refuse it.
    let replacement = Image::oci("replacement");
    push_blobs(&registry, REPO, &replacement).await;

    for case in refusals(&replacement, "stable") {
        let reply = registry
            .put_manifest(
                REPO,
                &case.reference,
                case.content_type.as_deref(),
                &case.body,
            )
            .await;
        assert_eq!(reply.status, case.status, "{}: {reply}", case.what);
        reply.assert_error(case.status, case.code);

        assert_manifest(
            &registry,
            REPO,
            "stable",
            media::OCI_MANIFEST,
            &stored.manifest,
        )
        .await;
        registry
            .get(&format!("/v2/{REPO}/manifests/{}", sha256(&case.body)))
            .await
            .assert_error(404, "MANIFEST_UNKNOWN");
    }
    assert_eq!(tags(&registry, REPO).await, ["stable"]);
}

#[tokio::test]
async fn blobs_of_another_repository_do_not_satisfy_a_manifest() {
    let registry = TestRegistry::start().await;
    let image = Image::oci("blobs elsewhere");
    push_blobs(&registry, "elsewhere", &image).await;
    registry
        .put_manifest(REPO, "v1", Some(media::OCI_MANIFEST), &image.manifest)
        .await
        .assert_error(400, "MANIFEST_BLOB_UNKNOWN");
    registry
        .get(&format!("/v2/{REPO}/manifests/v1"))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn a_deleted_blob_no_longer_satisfies_a_manifest() {
    let registry = TestRegistry::start().await;
    let image = Image::oci("deleted layer");
    push_blobs(&registry, REPO, &image).await;
    registry
        .delete(&format!("/v2/{REPO}/blobs/{}", sha256(&image.layers[0])))
        .await
        .assert_status(202);
    registry
        .put_manifest(REPO, "v1", Some(media::OCI_MANIFEST), &image.manifest)
        .await
        .assert_error(400, "MANIFEST_BLOB_UNKNOWN");
}

#[tokio::test]
async fn an_index_child_of_another_repository_is_unknown() {
    let registry = TestRegistry::start().await;
    let child = registry.push_seeded_image("elsewhere", "v1", "child").await;
    let bytes = index(media::OCI_INDEX, &[child.descriptor()]);
    registry
        .put_manifest(REPO, "multi", Some(media::OCI_INDEX), &bytes)
        .await
        .assert_error(400, "MANIFEST_BLOB_UNKNOWN");
}

#[tokio::test]
async fn invalid_tags_are_refused() {
    let registry = TestRegistry::start().await;
    let image = Image::oci("bad tags");
    push_blobs(&registry, REPO, &image).await;
    let too_long = "t".repeat(129);
    for tag in ["-leading-dash", ".leading-dot", "a+b", too_long.as_str()] {
        let reply = registry
            .put_manifest(REPO, tag, Some(media::OCI_MANIFEST), &image.manifest)
            .await;
        reply.assert_error(400, "MANIFEST_INVALID");
    }
    let longest = "t".repeat(128);
    registry
        .put_manifest(REPO, &longest, Some(media::OCI_MANIFEST), &image.manifest)
        .await
        .assert_status(201);
    assert_eq!(tags(&registry, REPO).await, [longest]);
}

#[tokio::test]
async fn a_manifest_of_exactly_4_mib_is_accepted() {
    let registry = TestRegistry::start().await;
    let image = Image::oci("four mebibytes");
    push_blobs(&registry, REPO, &image).await;
    let limit = 4 * 1024 * 1024;
    let mut bytes = image.manifest.clone();
    bytes.resize(limit, b' ');
    let reply = registry
        .put_manifest(REPO, "big", Some(media::OCI_MANIFEST), &bytes)
        .await;
    assert_manifest_created(&reply, REPO, &bytes);
    let get = registry.get(&format!("/v2/{REPO}/manifests/big")).await;
    get.assert_status(200);
    assert_eq!(get.body.len(), limit);
    assert_eq!(get.body.as_ref(), bytes.as_slice());
}

#[tokio::test]
async fn a_manifest_over_4_mib_is_413() {
    let registry = TestRegistry::start().await;
    let stored = registry
        .push_seeded_image(REPO, "big", "before the big one")
        .await;
    // Declared too large: refused before the body is read, so none is sent.
    let length = (4 * 1024 * 1024 + 1).to_string();
    let mut connection = registry.connect_raw().await;
    let mut request =
        berth_tests::request_head("PUT", &format!("/v2/{REPO}/manifests/big"), registry.addr());
    request.push_str(&format!(
        "Content-Type: {}\r\nContent-Length: {length}\r\n\r\n",
        media::OCI_MANIFEST
    ));
    connection.send(request.as_bytes()).await;
    let reply = connection.read_response(false).await;
    reply.assert_error(413, "PAYLOAD_TOO_LARGE");
    assert_manifest(
        &registry,
        REPO,
        "big",
        media::OCI_MANIFEST,
        &stored.manifest,
    )
    .await;
}

#[tokio::test]
async fn wrong_methods_on_manifests_are_405() {
    let registry = TestRegistry::start().await;
    for method in [Method::POST, Method::PATCH] {
        registry
            .call(method, &format!("/v2/{REPO}/manifests/latest"))
            .await
            .assert_error(405, "UNSUPPORTED");
    }
}

#[tokio::test]
async fn a_streamed_manifest_is_stored_exactly() {
    let registry = TestRegistry::start().await;
    let image = Image::oci("streamed manifest");
    push_blobs(&registry, REPO, &image).await;
    let chunks: Vec<Vec<u8>> = image.manifest.chunks(100).map(<[u8]>::to_vec).collect();
    let stream = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
    let reply = registry
        .send(
            registry
                .request(Method::PUT, &format!("/v2/{REPO}/manifests/streamed"))
                .header("Content-Type", media::OCI_MANIFEST)
                .body(reqwest::Body::wrap_stream(stream)),
        )
        .await;
    assert_manifest_created(&reply, REPO, &image.manifest);
    assert_manifest(
        &registry,
        REPO,
        "streamed",
        media::OCI_MANIFEST,
        &image.manifest,
    )
    .await;
}

#[tokio::test]
async fn a_streamed_manifest_over_4_mib_is_413() {
    let registry = TestRegistry::start().await;
    let stored = registry
        .push_seeded_image(REPO, "big", "before the streamed one")
        .await;
    let image = Image::oci("streamed too big");
    push_blobs(&registry, REPO, &image).await;
    let mut bytes = image.manifest.clone();
    bytes.resize(4 * 1024 * 1024 + 1, b' ');

    let mut connection = registry.connect_raw().await;
    let mut request =
        berth_tests::request_head("PUT", &format!("/v2/{REPO}/manifests/big"), registry.addr());
    request.push_str(&format!(
        "Content-Type: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        media::OCI_MANIFEST
    ));
    connection.send(request.as_bytes()).await;
    let mut body = Vec::new();
    for chunk in bytes.chunks(64 * 1024) {
        body.extend_from_slice(&berth_tests::encode_chunk(chunk));
    }
    body.extend_from_slice(berth_tests::LAST_CHUNK);
    let reply = connection.finish_while_reading(body).await;
    reply.assert_error(413, "PAYLOAD_TOO_LARGE");
    assert_manifest(
        &registry,
        REPO,
        "big",
        media::OCI_MANIFEST,
        &stored.manifest,
    )
    .await;
}
