//! The metadata, account and replication store conformance suites and the adapter's own
//! cases, against a real DynamoDB Local. Each test creates a fresh table with `create_table`.
//!
//! ```text
//! eval "$(scripts/services/dynamodb-local.sh start)"
//! cargo test -p berth-meta-dynamodb -- --ignored
//! scripts/services/dynamodb-local.sh stop
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use berth_core::accounts::{AccountStore, Member, Project, ProjectRole, Robot, User};
use berth_core::manifest::{ReferrerDescriptor, media_type};
use berth_core::ports::{ManifestRecord, MetadataStore, StagedUpload, UploadSession};
use berth_core::replication::{Execution, ReplicationStore, TriggerKind};
use berth_core::{Algorithm, Digest, ErrorCode, RepositoryName, Tag, UploadId};
use berth_meta_dynamodb::{
    DynamoMetadataStore, INLINE_LIMIT, PART_BYTES, REPLICATION_PREFIX, create_table,
};
use bytes::Bytes;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// A client for the DynamoDB Local that `scripts/services/dynamodb-local.sh start` announced.
fn client() -> Client {
    let endpoint = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").expect(
        "AWS_ENDPOINT_URL_DYNAMODB is not set: eval \"$(scripts/services/dynamodb-local.sh start)\"",
    );
    let credentials = Credentials::new(
        env("AWS_ACCESS_KEY_ID", "berthlocal"),
        env("AWS_SECRET_ACCESS_KEY", "berthlocal"),
        None,
        None,
        "test environment",
    );
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(env("AWS_REGION", "us-east-1")))
        .credentials_provider(credentials)
        .build();
    Client::from_conf(config)
}

fn unique(label: &str) -> String {
    let mut nonce = uuid::Uuid::new_v4().simple().to_string();
    nonce.truncate(12);
    format!("{label}-{nonce}")
}

/// A store over a table of its own.
async fn fresh_store() -> (Client, String, DynamoMetadataStore) {
    let client = client();
    let table = unique("berth-test");
    create_table(&client, &table)
        .await
        .unwrap_or_else(|e| panic!("create_table({table}) failed: {e}"));
    let store = DynamoMetadataStore::new(client.clone(), &table);
    (client, table, store)
}

fn repository(name: &str) -> RepositoryName {
    name.parse().expect("a repository name")
}

fn tag(name: &str) -> Tag {
    name.parse().expect("a tag")
}

/// A manifest of `len` bytes that no other test produces.
fn manifest(len: usize) -> ManifestRecord {
    let mut bytes = format!("{{\"seed\":\"{}\",\"pad\":\"", uuid::Uuid::new_v4()).into_bytes();
    bytes.extend((bytes.len()..len.saturating_sub(2)).map(|i| b'a' + (i % 26) as u8));
    bytes.extend_from_slice(b"\"}");
    ManifestRecord {
        digest: Digest::of(Algorithm::Sha256, &bytes),
        media_type: media_type::OCI_MANIFEST.to_owned(),
        bytes: Bytes::from(bytes),
        referrer: None,
    }
}

fn with_subject(mut record: ManifestRecord, subject: &Digest) -> ManifestRecord {
    let descriptor = ReferrerDescriptor {
        media_type: record.media_type.clone(),
        digest: record.digest.clone(),
        size: record.bytes.len() as u64,
        artifact_type: Some("application/vnd.example.sbom".to_owned()),
        annotations: BTreeMap::from([("org.example.kind".to_owned(), "sbom".to_owned())]),
    };
    record.referrer = Some((subject.clone(), descriptor));
    record
}

/// The sort keys stored in the repository's partition that start with `prefix`.
async fn stored_keys(
    client: &Client,
    table: &str,
    repo: &RepositoryName,
    prefix: &str,
) -> Vec<String> {
    sort_keys(client, table, &format!("REPO#{repo}"), prefix).await
}

/// The sort keys in partition `pk` that start with `prefix` (any, if empty), read with raw
/// queries.
async fn sort_keys(client: &Client, table: &str, pk: &str, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut start = None;
    loop {
        // DynamoDB refuses an empty key value: no prefix is no condition on the sort key.
        let mut query = client
            .query()
            .table_name(table)
            .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()));
        query = if prefix.is_empty() {
            query.key_condition_expression("PK = :pk")
        } else {
            query
                .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
                .expression_attribute_values(":prefix", AttributeValue::S(prefix.to_owned()))
        };
        let page = query
            .projection_expression("SK")
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("a raw query");
        for item in page.items() {
            if let Some(AttributeValue::S(sk)) = item.get("SK") {
                keys.push(sk.clone());
            }
        }
        match page.last_evaluated_key {
            Some(next) => start = Some(next),
            None => return keys,
        }
    }
}

/// How many pages DynamoDB needs to return the repository's tag items.
async fn tag_pages(client: &Client, table: &str, repo: &RepositoryName) -> usize {
    let mut pages = 0;
    let mut start = None;
    loop {
        let page = client
            .query()
            .table_name(table)
            .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
            .expression_attribute_values(":pk", AttributeValue::S(format!("REPO#{repo}")))
            .expression_attribute_values(":prefix", AttributeValue::S("TAG#".to_owned()))
            .projection_expression("SK")
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("a raw query");
        pages += 1;
        match page.last_evaluated_key {
            Some(next) => start = Some(next),
            None => return pages,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs DynamoDB Local: scripts/test-all.sh starts it"]
async fn metadata_store_conforms() {
    let (_client, _table, store) = fresh_store().await;
    berth_core::conformance::run_all_metadata_store(&store).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs DynamoDB Local: scripts/test-all.sh starts it"]
async fn account_store_conforms() {
    let (_client, _table, store) = fresh_store().await;
    berth_core::conformance::run_all_account_store(&store).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs DynamoDB Local: scripts/test-all.sh starts it"]
async fn audit_store_conforms() {
    let (_client, _table, store) = fresh_store().await;
    berth_core::conformance::audit_store::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs DynamoDB Local: scripts/test-all.sh starts it"]
async fn audit_store_counts_in_the_same_table() {
    let (_client, _table, store) = fresh_store().await;
    berth_core::conformance::audit_store::run_all_counted(&store, &store).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs DynamoDB Local: scripts/test-all.sh starts it"]
async fn statistics_store_conforms() {
    let (_client, _table, store) = fresh_store().await;
    berth_core::conformance::statistics_store::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs DynamoDB Local: scripts/test-all.sh starts it"]
async fn webhook_store_conforms() {
    let (_client, _table, store) = fresh_store().await;
    berth_core::conformance::webhook_store::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs DynamoDB Local: scripts/test-all.sh starts it"]
async fn create_table_is_idempotent_and_checks_the_schema() {
    let (client, table, store) = fresh_store().await;
    let repo = repository(&unique("idempotent"));
    let record = manifest(100);
    store
        .put_manifest(&repo, &record, Some(&tag("kept")))
        .await
        .expect("put");
    create_table(&client, &table)
        .await
        .expect("creating an existing table again is fine");
    assert_eq!(
        store
            .tagged_manifest(&repo, &tag("kept"))
            .await
            .expect("read"),
        Some(record),
        "creating it again keeps the data"
    );

    let foreign = unique("berth-foreign");
    client
        .create_table()
        .table_name(&foreign)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("definition"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .expect("key"),
        )
        .send()
        .await
        .expect("a table of another schema");
    let err = create_table(&client, &foreign)
        .await
        .expect_err("a table of another schema is refused");
    assert!(
        err.cause()
            .is_some_and(|cause| cause.contains("another schema")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs DynamoDB Local: scripts/test-all.sh starts it"]
async fn a_one_mib_manifest_is_split_and_round_trips() {
    let (client, table, store) = fresh_store().await;
    let repo = repository(&unique("large"));
    let subject = manifest(64);
    store
        .put_manifest(&repo, &subject, None)
        .await
        .expect("put subject");
    let record = with_subject(manifest(1024 * 1024), &subject.digest);
    assert!(record.bytes.len() > INLINE_LIMIT);
    store
        .put_manifest(&repo, &record, Some(&tag("big")))
        .await
        .expect("put a 1 MiB manifest");

    let parts_prefix = format!("MANIFEST#{}#PART#", record.digest);
    let parts = stored_keys(&client, &table, &repo, &parts_prefix).await;
    assert_eq!(
        parts.len(),
        record.bytes.len().div_ceil(PART_BYTES),
        "{parts:?}"
    );

    let by_digest = store
        .manifest(&repo, &record.digest)
        .await
        .expect("by digest");
    assert_eq!(by_digest.as_ref(), Some(&record), "by digest, byte-exact");
    let by_tag = store
        .tagged_manifest(&repo, &tag("big"))
        .await
        .expect("by tag");
    assert_eq!(by_tag.as_ref(), Some(&record), "by tag, byte-exact");
    let referrers = store
        .referrers(&repo, &subject.digest)
        .await
        .expect("referrers");
    assert_eq!(referrers.len(), 1);
    assert_eq!(referrers[0].digest, record.digest);
    assert_eq!(
        store
            .manifests_present(&repo, std::slice::from_ref(&record.digest))
            .await
            .expect("present"),
        [true]
    );

    // Stored again, under a second tag: the parts are reused, not written twice.
    store
        .put_manifest(&repo, &record, Some(&tag("big2")))
        .await
        .expect("put again");
    assert_eq!(
        stored_keys(&client, &table, &repo, &parts_prefix).await,
        parts
    );
    assert_eq!(
        store
            .tagged_manifest(&repo, &tag("big2"))
            .await
            .expect("by tag")
            .as_ref(),
        Some(&record)
    );

    // Stored again under another media type: every tag serves the new one.
    let mut retyped = record.clone();
    retyped.media_type = media_type::DOCKER_MANIFEST.to_owned();
    store
        .put_manifest(&repo, &retyped, None)
        .await
        .expect("put retyped");
    for name in ["big", "big2"] {
        let served = store
            .tagged_manifest(&repo, &tag(name))
            .await
            .expect("by tag");
        assert_eq!(
            served.map(|m| m.media_type),
            Some(retyped.media_type.clone()),
            "{name}"
        );
    }

    assert!(
        store
            .delete_manifest(&repo, &record.digest)
            .await
            .expect("delete")
    );
    assert_eq!(
        store.manifest(&repo, &record.digest).await.expect("read"),
        None
    );
    assert_eq!(
        store
            .tagged_manifest(&repo, &tag("big"))
            .await
            .expect("read"),
        None
    );
    assert!(
        store
            .referrers(&repo, &subject.digest)
            .await
            .expect("referrers")
            .is_empty()
    );
    let left = stored_keys(
        &client,
        &table,
        &repo,
        &format!("MANIFEST#{}", record.digest),
    )
    .await;
    assert!(left.is_empty(), "items left after delete: {left:?}");
    assert_eq!(
        store.tags(&repo, None, 10).await.expect("tags"),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs DynamoDB Local: scripts/test-all.sh starts it"]
async fn a_new_media_type_reaches_every_tag_of_an_inline_manifest() {
    let (_client, _table, store) = fresh_store().await;
    let repo = repository(&unique("retype"));
    let record = manifest(500);
    for name in ["one", "two"] {
        store
            .put_manifest(&repo, &record, Some(&tag(name)))
            .await
            .expect("put");
    }
    let mut retyped = record.clone();
    retyped.media_type = media_type::DOCKER_MANIFEST.to_owned();
    store
        .put_manifest(&repo, &retyped, Some(&tag("three")))
        .await
        .expect("put retyped");
    for name in ["one", "two", "three"] {
        assert_eq!(
            store
                .tagged_manifest(&repo, &tag(name))
                .await
                .expect("read")
                .as_ref(),
            Some(&retyped),
            "{name}"
        );
    }
    assert_eq!(
        store
            .manifest(&repo, &record.digest)
            .await
            .expect("read")
            .as_ref(),
        Some(&retyped)
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs DynamoDB Local: scripts/test-all.sh starts it"]
async fn listings_follow_dynamodb_pages() {
    let (client, table, store) = fresh_store().await;
    let repo = repository(&unique("pages"));
    // Tag items hold the manifest inline: 20 tags of a 250 KB manifest are 5 MB, so a
    // listing of them spans several 1 MB pages.
    let record = manifest(250 * 1024);
    let mut names: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
    for name in &names {
        store
            .put_manifest(&repo, &record, Some(&tag(name)))
            .await
            .expect("put");
    }
    names.sort();
    let pages = tag_pages(&client, &table, &repo).await;
    assert!(pages >= 4, "the tags fit in {pages} DynamoDB pages");
    assert_eq!(store.tags(&repo, None, 100).await.expect("tags"), names);
    assert_eq!(store.tags(&repo, None, 7).await.expect("tags"), names[..7]);
    assert_eq!(
        store.tags(&repo, Some("t03"), 6).await.expect("tags"),
        names[4..10]
    );
    assert_eq!(
        store.tags(&repo, Some("t035"), 100).await.expect("tags"),
        names[4..]
    );

    // A new media type rewrites every tag: more bytes than one transaction carries.
    let mut retyped = record.clone();
    retyped.media_type = media_type::DOCKER_MANIFEST.to_owned();
    store
        .put_manifest(&repo, &retyped, None)
        .await
        .expect("retype");
    for name in &names {
        let served = store
            .tagged_manifest(&repo, &tag(name))
            .await
            .expect("read");
        assert_eq!(served.as_ref(), Some(&retyped), "{name}");
    }

    // Finding the tags to delete reads every page too.
    assert!(
        store
            .delete_manifest(&repo, &record.digest)
            .await
            .expect("delete")
    );
    assert_eq!(
        store.tags(&repo, None, 100).await.expect("tags"),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs DynamoDB Local: scripts/test-all.sh starts it"]
async fn a_manifest_with_more_tags_than_a_transaction_holds() {
    let (_client, _table, store) = fresh_store().await;
    let store = Arc::new(store);
    let repo = repository(&unique("many-tags"));
    let record = manifest(300);
    let other = manifest(300);
    store
        .put_manifest(&repo, &other, Some(&tag("other")))
        .await
        .expect("put");
    let names: Vec<String> = (0..130).map(|i| format!("v{i:03}")).collect();
    let puts = names.iter().map(|name| {
        let (store, repo, record) = (Arc::clone(&store), repo.clone(), record.clone());
        let tag = tag(name);
        tokio::spawn(async move { store.put_manifest(&repo, &record, Some(&tag)).await })
    });
    for put in futures_util::future::join_all(puts).await {
        put.expect("a task").expect("put");
    }
    assert_eq!(
        store.tags(&repo, None, 1000).await.expect("tags").len(),
        131
    );

    let mut retyped = record.clone();
    retyped.media_type = media_type::DOCKER_MANIFEST.to_owned();
    store
        .put_manifest(&repo, &retyped, None)
        .await
        .expect("retype");
    for name in [&names[0], &names[129]] {
        let served = store
            .tagged_manifest(&repo, &tag(name))
            .await
            .expect("read");
        assert_eq!(served.as_ref(), Some(&retyped), "{name}");
    }

    assert!(
        store
            .delete_manifest(&repo, &record.digest)
            .await
            .expect("delete")
    );
    assert_eq!(
        store.tags(&repo, None, 1000).await.expect("tags"),
        ["other"]
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs DynamoDB Local: scripts/test-all.sh starts it"]
async fn racing_upload_updates_from_many_tasks_have_one_winner() {
    let (_client, _table, store) = fresh_store().await;
    let store = Arc::new(store);
    let mut session = UploadSession {
        repository: repository(&unique("race")),
        staged: StagedUpload {
            id: UploadId::generate(),
            size: 0,
            backend: Vec::new(),
        },
        hash: berth_core::digest::DigestHasher::new(Algorithm::Sha256).save(),
        started_at: 1_700_000_000,
    };
    store.create_upload(&session).await.expect("create");
    for round in 0..5 {
        let expected = session.staged.size;
        let racers = (0..32u64).map(|i| {
            let store = Arc::clone(&store);
            let mut candidate = session.clone();
            candidate.staged.size = expected + i + 1;
            candidate.staged.backend = format!("racer {i}").into_bytes();
            tokio::spawn(async move {
                let won = store.update_upload(&candidate, expected).await;
                (won, candidate)
            })
        });
        let mut winners = Vec::new();
        for racer in futures_util::future::join_all(racers).await {
            let (won, candidate) = racer.expect("a task");
            if won.expect("update_upload") {
                winners.push(candidate);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}");
        let stored = store.upload(&session.staged.id).await.expect("read");
        assert_eq!(stored.as_ref(), Some(&winners[0]), "round {round}");
        session = winners.remove(0);
    }
    let missing = UploadSession {
        staged: StagedUpload {
            id: UploadId::generate(),
            ..session.staged.clone()
        },
        ..session.clone()
    };
    assert!(!store.update_upload(&missing, 0).await.expect("update"));
    assert_eq!(store.upload(&missing.staged.id).await.expect("read"), None);
}

/// A tag pushed while its manifest is deleted either survives with the manifest or goes
/// with it: never a tag that serves a deleted manifest.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs DynamoDB Local: scripts/test-all.sh starts it"]
async fn a_push_racing_a_delete_leaves_no_dangling_tag() {
    let (_client, _table, store) = fresh_store().await;
    let store = Arc::new(store);
    let repo = repository(&unique("push-delete"));
    for round in 0..20 {
        let record = manifest(200);
        store
            .put_manifest(&repo, &record, Some(&tag("a")))
            .await
            .expect("put");
        let pushed = {
            let (store, repo, record) = (Arc::clone(&store), repo.clone(), record.clone());
            tokio::spawn(async move { store.put_manifest(&repo, &record, Some(&tag("b"))).await })
        };
        let deleted = {
            let (store, repo, digest) = (Arc::clone(&store), repo.clone(), record.digest.clone());
            tokio::spawn(async move { store.delete_manifest(&repo, &digest).await })
        };
        pushed.await.expect("a task").expect("put");
        assert!(
            deleted.await.expect("a task").expect("delete"),
            "round {round}"
        );
        let stored = store.manifest(&repo, &record.digest).await.expect("read");
        let b = store.tagged_manifest(&repo, &tag("b")).await.expect("read");
        match stored {
            None => assert_eq!(b, None, "round {round}: tag b outlived its manifest"),
            Some(stored) => assert_eq!(b, Some(stored), "round {round}"),
        }
        assert_eq!(
            store.tagged_manifest(&repo, &tag("a")).await.expect("read"),
            None
        );
        store.delete_tag(&repo, &tag("b")).await.expect("cleanup");
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs DynamoDB Local: scripts/test-all.sh starts it"]
async fn a_missing_table_is_an_internal_error_that_names_nothing() {
    let table = unique("berth-missing");
    let store = DynamoMetadataStore::new(client(), &table);
    let err = store
        .manifest(&repository("r"), &Digest::of(Algorithm::Sha256, b"x"))
        .await
        .expect_err("no such table");
    assert_eq!(err.code(), ErrorCode::Unknown, "{err}");
    let body = err.to_body().to_string();
    assert!(!body.contains(&table), "{body}");
}

/// Needs no DynamoDB: nothing listens on the endpoint.
#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable_and_named_nowhere_the_client_sees() {
    let endpoint = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        format!("http://{}", listener.local_addr().expect("an address"))
    };
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("a", "b", None, None, "test"))
        .retry_config(RetryConfig::standard().with_max_attempts(1))
        .build();
    let store = DynamoMetadataStore::new(Client::from_conf(config), "berth-unreachable");
    let err = store
        .upload(&UploadId::generate())
        .await
        .expect_err("nothing listens there");
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
    let body = err.to_body().to_string();
    assert!(
        !body.contains("127.0.0.1") && !body.contains("berth-unreachable"),
        "{body}"
    );
}

// --- accounts ------------------------------------------------------------------------------

/// The sort keys of every item in partition `pk`.
async fn partition_keys(client: &Client, table: &str, pk: &str) -> Vec<String> {
    sort_keys(client, table, pk, "").await
}

fn user(name: &str) -> User {
    User {
        name: name.to_owned(),
        email: None,
        password_hash: "$argon2id$hash".to_owned(),
        admin: false,
        created_at: 1,
        password_changed_at: 0,
    }
}

fn project(name: &str) -> Project {
    Project {
        name: name.to_owned(),
        public: false,
        owner: "admin".to_owned(),
        created_at: 1,
        immutable_tags: Default::default(),
    }
}

fn robot(project: &str, label: &str) -> Robot {
    Robot {
        name: format!("robot${project}+{label}"),
        project: project.to_owned(),
        description: String::new(),
        secret_hash: "$argon2id$secret".to_owned(),
        permissions: Vec::new(),
        // Long past: a robot's expiry must not be the item's time to live.
        expires_at: Some(1),
        disabled: false,
        created_at: 1,
    }
}

fn member(project: &str, user: &str) -> Member {
    Member {
        project: project.to_owned(),
        user: user.to_owned(),
        role: ProjectRole::Developer,
        created_at: 1,
    }
}

/// Users and projects are listed through the catalog index under partitions of their own:
/// none of them shows up as a repository, nor a repository as one of them.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs DynamoDB Local: scripts/test-all.sh starts it"]
async fn accounts_stay_out_of_the_repository_catalog() {
    let (_client, _table, store) = fresh_store().await;
    store
        .link_blob(
            &repository("library/alpine"),
            &Digest::of(Algorithm::Sha256, b"layer"),
            5,
        )
        .await
        .expect("link");
    assert!(store.create_user(&user("alice")).await.expect("user"));
    assert!(store.create_user(&user("library")).await.expect("user"));
    assert!(
        store
            .create_project(&project("library"))
            .await
            .expect("project")
    );
    assert!(
        store
            .create_project(&project("zeta"))
            .await
            .expect("project")
    );
    assert_eq!(
        store.repositories(None, 100).await.expect("catalog"),
        ["library/alpine"]
    );
    let users = store.users(None, 100).await.expect("users");
    let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["alice", "library"]);
    let projects = store.projects(None, 100).await.expect("projects");
    let names: Vec<&str> = projects.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["library", "zeta"]);
}

/// A project with more members and robots than one transaction holds, and a user with more
/// memberships, are deleted whole, both sides of every membership.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs DynamoDB Local: scripts/test-all.sh starts it"]
async fn deletes_larger_than_one_transaction() {
    let (client, table, store) = fresh_store().await;
    let big = "big";
    assert!(store.create_project(&project(big)).await.expect("project"));
    let users: Vec<String> = (0..60).map(|i| format!("user{i:02}")).collect();
    for name in &users {
        assert!(store.create_user(&user(name)).await.expect("user"));
        assert!(store.put_member(&member(big, name)).await.expect("member"));
    }
    for i in 0..5 {
        assert!(
            store
                .create_robot(&robot(big, &format!("r{i}")))
                .await
                .expect("robot")
        );
    }
    assert_eq!(
        partition_keys(&client, &table, "PROJECT#big").await.len(),
        66
    );
    assert!(store.delete_project(big).await.expect("delete"));
    assert_eq!(
        partition_keys(&client, &table, "PROJECT#big").await,
        Vec::<String>::new(),
        "the project's partition is empty"
    );
    for name in &users {
        assert_eq!(
            partition_keys(&client, &table, &format!("USER#{name}")).await,
            ["META"],
            "{name} keeps no membership"
        );
    }
    assert!(store.robot("robot$big+r0").await.expect("robot").is_none());

    let busy = "busy";
    assert!(store.create_user(&user(busy)).await.expect("user"));
    let projects: Vec<String> = (0..60).map(|i| format!("p{i:02}")).collect();
    for name in &projects {
        assert!(store.create_project(&project(name)).await.expect("project"));
        assert!(store.put_member(&member(name, busy)).await.expect("member"));
    }
    assert_eq!(
        store.memberships(busy).await.expect("memberships").len(),
        60
    );
    assert!(store.delete_user(busy).await.expect("delete"));
    assert_eq!(
        partition_keys(&client, &table, "USER#busy").await,
        Vec::<String>::new(),
        "the user's partition is empty"
    );
    for name in &projects {
        assert_eq!(
            partition_keys(&client, &table, &format!("PROJECT#{name}")).await,
            ["META"],
            "{name} keeps no member"
        );
    }
}

/// Members added while their user is deleted are either refused or deleted with the user:
/// none is left behind for a new user of the same name.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs DynamoDB Local: scripts/test-all.sh starts it"]
async fn a_user_deleted_while_joining_projects_leaves_no_membership() {
    let (client, table, store) = fresh_store().await;
    let store = Arc::new(store);
    let projects: Vec<String> = (0..8).map(|i| format!("race{i}")).collect();
    for name in &projects {
        assert!(store.create_project(&project(name)).await.expect("project"));
    }
    for round in 0..3 {
        let name = format!("racer{round}");
        assert!(store.create_user(&user(&name)).await.expect("user"));
        let joins: Vec<_> = projects
            .iter()
            .map(|p| {
                let (store, joining) = (Arc::clone(&store), member(p, &name));
                tokio::spawn(async move { store.put_member(&joining).await })
            })
            .collect();
        let deleted = {
            let (store, name) = (Arc::clone(&store), name.clone());
            tokio::spawn(async move { store.delete_user(&name).await })
        };
        for join in joins {
            join.await.expect("a task").expect("put_member");
        }
        assert!(deleted.await.expect("a task").expect("delete_user"));
        assert_eq!(
            partition_keys(&client, &table, &format!("USER#{name}")).await,
            Vec::<String>::new(),
            "round {round}: the user's partition is empty"
        );
        for project in &projects {
            assert_eq!(
                store.member(project, &name).await.expect("member"),
                None,
                "round {round}: {project}"
            );
        }
    }
}

// --- replication ---------------------------------------------------------------------------

/// The replication suite, twice over one table as other runs would share it; everything it
/// wrote lives under the replication prefix, apart from what the table's stream reports as
/// pushes and deletes.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs DynamoDB Local: scripts/test-all.sh starts it"]
async fn replication_store_conforms() {
    let (client, table, store) = fresh_store().await;
    for _ in 0..2 {
        berth_core::conformance::run_all_replication_store(&store).await;
    }
    let mut partitions = std::collections::BTreeSet::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(&table)
            .projection_expression("PK")
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("a raw scan");
        for item in page.items() {
            if let Some(AttributeValue::S(pk)) = item.get("PK") {
                partitions.insert(pk.clone());
            }
        }
        match page.last_evaluated_key {
            Some(next) => start = Some(next),
            None => break,
        }
    }
    assert!(!partitions.is_empty(), "the suite wrote items");
    for pk in &partitions {
        assert!(pk.starts_with(REPLICATION_PREFIX), "{pk}");
    }
}

/// Listings of executions follow DynamoDB's 1 MB pages: one policy's executions behind a
/// page of another's are found, and so are all executions beyond the first page.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs DynamoDB Local: scripts/test-all.sh starts it"]
async fn execution_listings_follow_pages() {
    let (_client, _table, store) = fresh_store().await;
    let execution = |id: u64, policy_id: u64, error: Option<String>| Execution {
        id,
        policy_id,
        trigger: TriggerKind::Manual,
        start_time: id,
        planned: true,
        error,
        stop_requested: false,
    };
    let mine = [execution(1, 1, None), execution(2, 1, None)];
    for record in &mine {
        store.put_execution(record).await.expect("put");
    }
    // 14 executions of about 100 KB each, newer than the first two: more than one page.
    let big = "x".repeat(100 * 1024);
    let theirs: Vec<Execution> = (3..17)
        .map(|id| execution(id, 2, Some(big.clone())))
        .collect();
    for record in &theirs {
        store.put_execution(record).await.expect("put");
    }
    assert_eq!(
        store.executions(Some(1), 10).await.expect("list"),
        [mine[1].clone(), mine[0].clone()],
        "one policy's executions behind a page of another's"
    );
    assert_eq!(
        store.executions(Some(1), 1).await.expect("list"),
        [mine[1].clone()]
    );
    let all = store.executions(None, 100).await.expect("list");
    let ids: Vec<u64> = all.iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..17).rev().collect::<Vec<u64>>(), "every execution");
    let ids: Vec<u64> = store
        .executions(Some(2), 13)
        .await
        .expect("list")
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, (4..17).rev().collect::<Vec<u64>>(), "limited");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs DynamoDB Local: scripts/test-all.sh starts it"]
async fn garbage_index_conforms() {
    let (_client, _table, store) = fresh_store().await;
    berth_core::conformance::garbage_index::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs DynamoDB Local: scripts/test-all.sh starts it"]
async fn quota_store_conforms() {
    let (_client, _table, store) = fresh_store().await;
    berth_core::conformance::quota_store::run_all(std::sync::Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs DynamoDB Local: scripts/test-all.sh starts it"]
async fn a_table_written_before_quotas_gets_its_usage_counted() {
    use berth_core::quota::QuotaStore;
    let (client, table, store) = fresh_store().await;
    let (shared, own) = (manifest(400), manifest(700));
    for (repo, record) in [("old/a", &shared), ("old/b", &shared), ("old/b", &own)] {
        store
            .put_manifest(&repository(repo), record, None)
            .await
            .expect("put");
    }
    let usage = store.quota("old").await.expect("quota").used;
    assert_eq!(usage, 1100, "each manifest counted once");

    // What a table of an earlier release holds: no quota items at all.
    let items = client
        .query()
        .table_name(&table)
        .key_condition_expression("PK = :pk")
        .expression_attribute_values(":pk", AttributeValue::S("QUOTA#old".into()))
        .send()
        .await
        .expect("query");
    for item in items.items() {
        client
            .delete_item()
            .table_name(&table)
            .key("PK", item["PK"].clone())
            .key("SK", item["SK"].clone())
            .send()
            .await
            .expect("delete");
    }
    assert_eq!(store.quota("old").await.expect("quota").used, 0);
    assert!(!store.quota_charges_counted().await.expect("marker"));

    let written = store.count_quota_charges().await.expect("count");
    assert_eq!(written, 2, "one charge item per distinct manifest");
    assert!(store.quota_charges_counted().await.expect("marker"));
    assert_eq!(store.quota("old").await.expect("quota").used, usage);
    // Counted as a put would have: deleting from one repository keeps the shared manifest.
    assert!(
        store
            .delete_manifest(&repository("old/a"), &shared.digest)
            .await
            .expect("delete")
    );
    assert_eq!(store.quota("old").await.expect("quota").used, usage);
    assert!(
        store
            .delete_repository(&repository("old/b"))
            .await
            .expect("delete repository")
    );
    assert_eq!(store.quota("old").await.expect("quota").used, 0);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs DynamoDB Local: scripts/test-all.sh starts it"]
async fn retention_store_conforms() {
    let (_client, _table, store) = fresh_store().await;
    berth_core::conformance::retention_store::run_all(&store).await;
}
