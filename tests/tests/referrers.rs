//! The referrers API: manifests that name a subject, their descriptors, the `artifactType`
//! filter, and removal.

use std::collections::BTreeMap;

use berth_tests::{Image, Reply, TestRegistry, content, descriptor, media, sha256};
use serde_json::{Value, json};

const REPO: &str = "sig/app";
const SBOM: &str = "application/vnd.example.sbom.v1+json";
const SIGNATURE: &str = "application/vnd.example.signature.v1";

/// Pushes an artifact manifest naming `subject` and returns its exact bytes.
async fn push_artifact(
    registry: &TestRegistry,
    repo: &str,
    subject: &Value,
    artifact_type: Option<&str>,
    config: (&str, &[u8]),
    annotations: Option<Value>,
    seed: &str,
) -> Vec<u8> {
    let (config_type, config_bytes) = config;
    registry.push_blob(repo, config_bytes).await;
    let layer = content(seed, 64);
    registry.push_blob(repo, &layer).await;
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": descriptor(config_type, config_bytes),
        "layers": [descriptor("application/octet-stream", &layer)],
        "subject": subject,
    });
    if let Some(artifact_type) = artifact_type {
        manifest["artifactType"] = json!(artifact_type);
    }
    if let Some(annotations) = annotations {
        manifest["annotations"] = annotations;
    }
    let bytes = manifest.to_string().into_bytes();
    let reply = registry
        .put_manifest(repo, &sha256(&bytes), Some(media::OCI_MANIFEST), &bytes)
        .await;
    reply.assert_status(201);
    assert_eq!(reply.header("oci-subject"), subject["digest"].as_str());
    bytes
}

fn assert_referrers_index(reply: &Reply) -> Vec<Value> {
    reply.assert_status(200).assert_api_version();
    assert_eq!(
        reply.header("content-type"),
        Some(media::OCI_INDEX),
        "{reply}"
    );
    let body = reply.json();
    assert_eq!(body["schemaVersion"], 2, "{reply}");
    assert_eq!(body["mediaType"], media::OCI_INDEX, "{reply}");
    body["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("no manifests array: {reply}"))
        .clone()
}

/// The listing's descriptors by digest.
fn by_digest(manifests: &[Value]) -> BTreeMap<String, Value> {
    manifests
        .iter()
        .map(|m| {
            (
                m["digest"].as_str().expect("a digest").to_owned(),
                m.clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_unknown_subject_has_an_empty_index() {
    let registry = TestRegistry::start().await;
    let subject = sha256(b"nothing refers to this");
    for repo in [REPO, "never/pushed"] {
        let reply = registry
            .get(&format!("/v2/{repo}/referrers/{subject}"))
            .await;
        assert!(assert_referrers_index(&reply).is_empty(), "{reply}");
        assert!(reply.header("oci-filters-applied").is_none());
    }
    registry.push_seeded_image(REPO, "v1", "no referrers").await;
    let reply = registry
        .get(&format!("/v2/{REPO}/referrers/{subject}"))
        .await;
    assert!(assert_referrers_index(&reply).is_empty(), "{reply}");
}

#[tokio::test]
async fn referrers_are_listed_with_their_descriptors() {
    let registry = TestRegistry::start().await;
    let subject = registry.push_seeded_image(REPO, "v1", "subject").await;
    let subject_descriptor = subject.descriptor();
    let empty = (media::OCI_EMPTY, b"{}".as_slice());

    let sbom = push_artifact(
        &registry,
        REPO,
        &subject_descriptor,
        Some(SBOM),
        empty,
        Some(json!({"org.example.kind": "sbom", "org.opencontainers.image.created": "2024-01-01T00:00:00Z"})),
        "sbom",
    )
    .await;
    let signature = push_artifact(
        &registry,
        REPO,
        &subject_descriptor,
        Some(SIGNATURE),
        empty,
        Some(json!({"org.example.signer": "alice"})),
        "signature",
    )
    .await;
    // Without artifactType, the config's media type is the artifact type.
    let config_typed = push_artifact(
        &registry,
        REPO,
        &subject_descriptor,
        None,
        ("application/vnd.example.config.v1+json", b"{\"k\":1}"),
        None,
        "config typed",
    )
    .await;

    let reply = registry
        .get(&format!("/v2/{REPO}/referrers/{}", subject.digest()))
        .await;
    let manifests = assert_referrers_index(&reply);
    assert!(reply.header("oci-filters-applied").is_none());
    assert_eq!(manifests.len(), 3, "{reply}");
    let listed = by_digest(&manifests);

    let expected = [
        (
            &sbom,
            SBOM,
            Some(
                json!({"org.example.kind": "sbom", "org.opencontainers.image.created": "2024-01-01T00:00:00Z"}),
            ),
        ),
        (
            &signature,
            SIGNATURE,
            Some(json!({"org.example.signer": "alice"})),
        ),
        (
            &config_typed,
            "application/vnd.example.config.v1+json",
            None,
        ),
    ];
    for (bytes, artifact_type, annotations) in expected {
        let digest = sha256(bytes);
        let entry = listed
            .get(&digest)
            .unwrap_or_else(|| panic!("{digest} is not listed: {reply}"));
        assert_eq!(entry["mediaType"], media::OCI_MANIFEST, "{entry}");
        assert_eq!(entry["size"], bytes.len(), "{entry}");
        assert_eq!(entry["artifactType"], artifact_type, "{entry}");
        match annotations {
            Some(annotations) => assert_eq!(entry["annotations"], annotations, "{entry}"),
            None => assert!(
                entry
                    .get("annotations")
                    .is_none_or(|a| a.as_object().is_some_and(|o| o.is_empty())),
                "{entry}"
            ),
        }
    }

    // The subject's own GET is unaffected.
    let get = registry.get(&format!("/v2/{REPO}/manifests/v1")).await;
    assert_eq!(get.body.as_ref(), subject.manifest.as_slice());
}

#[tokio::test]
async fn an_index_can_be_a_referrer() {
    let registry = TestRegistry::start().await;
    let subject = registry
        .push_seeded_image(REPO, "v1", "index subject")
        .await;
    let child = registry
        .push_seeded_image(REPO, "child", "index child")
        .await;
    let bytes = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "artifactType": "application/vnd.example.bundle",
        "manifests": [child.descriptor()],
        "subject": subject.descriptor(),
        "annotations": {"org.example.bundle": "yes"},
    })
    .to_string()
    .into_bytes();
    let reply = registry
        .put_manifest(REPO, &sha256(&bytes), Some(media::OCI_INDEX), &bytes)
        .await;
    reply.assert_status(201);
    assert_eq!(reply.header("oci-subject"), Some(subject.digest().as_str()));

    let reply = registry
        .get(&format!("/v2/{REPO}/referrers/{}", subject.digest()))
        .await;
    let manifests = assert_referrers_index(&reply);
    assert_eq!(manifests.len(), 1, "{reply}");
    assert_eq!(manifests[0]["mediaType"], media::OCI_INDEX);
    assert_eq!(manifests[0]["digest"], sha256(&bytes));
    assert_eq!(manifests[0]["size"], bytes.len());
    assert_eq!(
        manifests[0]["artifactType"],
        "application/vnd.example.bundle"
    );
    assert_eq!(
        manifests[0]["annotations"],
        json!({"org.example.bundle": "yes"})
    );
}

#[tokio::test]
async fn the_artifact_type_filter() {
    let registry = TestRegistry::start().await;
    let subject = registry.push_seeded_image(REPO, "v1", "filtered").await;
    let empty = (media::OCI_EMPTY, b"{}".as_slice());
    let sbom = push_artifact(
        &registry,
        REPO,
        &subject.descriptor(),
        Some(SBOM),
        empty,
        None,
        "f-sbom",
    )
    .await;
    let signature = push_artifact(
        &registry,
        REPO,
        &subject.descriptor(),
        Some(SIGNATURE),
        empty,
        None,
        "f-sig",
    )
    .await;

    let path = format!("/v2/{REPO}/referrers/{}", subject.digest());
    // `+` sent as is and percent-encoded.
    for filter in [SBOM.to_owned(), SBOM.replace('+', "%2B")] {
        let reply = registry.get(&format!("{path}?artifactType={filter}")).await;
        let manifests = assert_referrers_index(&reply);
        assert_eq!(
            reply.header("oci-filters-applied"),
            Some("artifactType"),
            "{reply}"
        );
        assert_eq!(manifests.len(), 1, "{filter}: {reply}");
        assert_eq!(manifests[0]["digest"], sha256(&sbom));
        assert_eq!(manifests[0]["artifactType"], SBOM);
    }

    let reply = registry
        .get(&format!("{path}?artifactType={SIGNATURE}"))
        .await;
    let manifests = assert_referrers_index(&reply);
    assert_eq!(reply.header("oci-filters-applied"), Some("artifactType"));
    assert_eq!(manifests.len(), 1, "{reply}");
    assert_eq!(manifests[0]["digest"], sha256(&signature));

    let reply = registry
        .get(&format!("{path}?artifactType=application/vnd.example.none"))
        .await;
    assert!(assert_referrers_index(&reply).is_empty(), "{reply}");
    assert_eq!(reply.header("oci-filters-applied"), Some("artifactType"));
}

#[tokio::test]
async fn a_deleted_referrer_leaves_the_listing() {
    let registry = TestRegistry::start().await;
    let subject = registry.push_seeded_image(REPO, "v1", "deletions").await;
    let empty = (media::OCI_EMPTY, b"{}".as_slice());
    let sbom = push_artifact(
        &registry,
        REPO,
        &subject.descriptor(),
        Some(SBOM),
        empty,
        None,
        "d-sbom",
    )
    .await;
    let signature = push_artifact(
        &registry,
        REPO,
        &subject.descriptor(),
        Some(SIGNATURE),
        empty,
        None,
        "d-sig",
    )
    .await;

    registry
        .delete(&format!("/v2/{REPO}/manifests/{}", sha256(&sbom)))
        .await
        .assert_status(202);
    let path = format!("/v2/{REPO}/referrers/{}", subject.digest());
    let manifests = assert_referrers_index(&registry.get(&path).await);
    assert_eq!(manifests.len(), 1);
    assert_eq!(manifests[0]["digest"], sha256(&signature));

    registry
        .delete(&format!("/v2/{REPO}/manifests/{}", sha256(&signature)))
        .await
        .assert_status(202);
    assert!(assert_referrers_index(&registry.get(&path).await).is_empty());
}

#[tokio::test]
async fn referrers_before_their_subject_and_per_repository() {
    let registry = TestRegistry::start().await;
    let subject = Image::oci("pushed later");
    let empty = (media::OCI_EMPTY, b"{}".as_slice());
    let sbom = push_artifact(
        &registry,
        REPO,
        &subject.descriptor(),
        Some(SBOM),
        empty,
        None,
        "early",
    )
    .await;

    let path = format!("/v2/{REPO}/referrers/{}", subject.digest());
    let manifests = assert_referrers_index(&registry.get(&path).await);
    assert_eq!(manifests.len(), 1);
    assert_eq!(manifests[0]["digest"], sha256(&sbom));

    registry.push_image(REPO, "v1", &subject).await;
    assert_eq!(assert_referrers_index(&registry.get(&path).await).len(), 1);

    // The same subject in another repository has no referrers.
    registry.push_image("other/app", "v1", &subject).await;
    let other = format!("/v2/other/app/referrers/{}", subject.digest());
    assert!(assert_referrers_index(&registry.get(&other).await).is_empty());
}

#[tokio::test]
async fn a_malformed_subject_digest_is_400() {
    let registry = TestRegistry::start().await;
    for subject in [
        "latest",
        "sha256:abc",
        "sha256:",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
    ] {
        registry
            .get(&format!("/v2/{REPO}/referrers/{subject}"))
            .await
            .assert_error(400, "DIGEST_INVALID");
    }
}
