//! Tag retention against a registry on embedded storage (and, ignored, on Garage and
//! DynamoDB Local): a project of 100 tagged artifacts (and two untagged ones) across five
//! repositories, pushed and pulled at known times, and a policy that mixes rules. The policy
//! is created and its runs are started and read through the management API; the runs are
//! carried out a repository a step, as the maintenance function does. A dry run reports
//! exactly what the rules name and deletes nothing; the real run keeps exactly that.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use berth_app::Retention;
use berth_core::statistics::Count;
use berth_core::{Digest, Event, EventKind, EventSink};
use berth_runtime::{StorageConfig, Stores};
use berth_tests::authed::{ADMIN_PASSWORD, auth_over, serve_on_loopback};
use berth_tests::aws::AwsSandbox;
use berth_tests::{Image, TestRegistry};
use serde_json::{Value, json};

const DAY_MS: u64 = 86_400_000;
/// The time the runs take as now.
const NOW: u64 = 1_800_000_000_000;
/// Artifacts a repository holds (tagged ones).
const PER_REPOSITORY: usize = 20;
const REPOSITORIES: [&str; 5] = ["api", "cache/x", "db", "frozen", "web"];

/// The events the retention runs publish.
#[derive(Default)]
struct Captured(Mutex<Vec<Event>>);

impl EventSink for Captured {
    fn publish(&self, event: &Event) {
        self.0.lock().expect("the event list").push(event.clone());
    }
}

/// One artifact of the project, with what the policy must do to it.
#[derive(Debug, Clone)]
struct Artifact {
    repository: String,
    tag: Option<String>,
    digest: String,
    retained: bool,
    /// No rule covers its repository: no task, never deleted.
    untouched: bool,
}

/// The tag of artifact `j`: `dev-<j>` for every third, `v<j>` otherwise.
fn tag_of(j: usize) -> String {
    if j.is_multiple_of(3) {
        format!("dev-{j}")
    } else {
        format!("v{j}")
    }
}

/// Pushed `PER_REPOSITORY - j` days ago: the highest `j` is the newest.
fn pushed_ms(j: usize) -> u64 {
    NOW - (PER_REPOSITORY - j) as u64 * DAY_MS
}

/// Every fifth artifact was pulled, `j / 5 + 1` days ago; the others never.
fn pulled_ms(j: usize) -> Option<u64> {
    j.is_multiple_of(5)
        .then(|| NOW - (j / 5 + 1) as u64 * DAY_MS)
}

/// What the policy below keeps, worked out by hand from its rules:
/// 1. the 3 most recently pushed `v*` artifacts, in every repository but `frozen` and
///    `cache/**`: j = 19, 17, 16 (18 is `dev-18`);
/// 2. whatever (untagged included) was pulled within 3 days, in `web` and `api`: j = 0, 5,
///    10 (pulled 1, 2 and 3 days ago; j = 15 was pulled 4 days ago), and web's untagged one;
/// 3. every `dev-*` in `cache/**`;
/// 4. (disabled) everything in `frozen`: no enabled rule covers `frozen`.
fn expected_retained(repository: &str, j: Option<usize>) -> bool {
    let Some(j) = j else {
        // The untagged artifacts: web's was pulled a day ago, db's never.
        return repository == "web";
    };
    let newest_v = [19, 17, 16].contains(&j);
    let pulled = [0, 5, 10].contains(&j);
    match repository {
        "web" | "api" => newest_v || pulled,
        "db" => newest_v,
        "cache/x" => tag_of(j).starts_with("dev-"),
        _ => true,
    }
}

fn policy_body() -> Value {
    let selector = |decoration: &str, pattern: &str| json!({"kind": "doublestar", "decoration": decoration, "pattern": pattern});
    json!({
        "algorithm": "or",
        "rules": [
            {
                "disabled": false, "action": "retain", "template": "latestPushedK",
                "params": {"latestPushedK": 3},
                "tag_selectors": [{"kind": "doublestar", "decoration": "matches", "pattern": "v*", "extras": "{\"untagged\":false}"}],
                "scope_selectors": {"repository": [selector("repoExcludes", "{frozen,cache/**}")]},
            },
            {
                "disabled": false, "action": "retain", "template": "nDaysSinceLastPull",
                "params": {"nDaysSinceLastPull": 3},
                "tag_selectors": [{"kind": "doublestar", "decoration": "matches", "pattern": "**", "extras": "{\"untagged\":true}"}],
                "scope_selectors": {"repository": [selector("repoMatches", "{web,api}")]},
            },
            {
                "disabled": false, "action": "retain", "template": "always", "params": {},
                "tag_selectors": [{"kind": "doublestar", "decoration": "matches", "pattern": "dev-*", "extras": "{\"untagged\":false}"}],
                "scope_selectors": {"repository": [selector("repoMatches", "cache/**")]},
            },
            {
                "disabled": true, "action": "retain", "template": "always", "params": {},
                "tag_selectors": [{"kind": "doublestar", "decoration": "matches", "pattern": "**"}],
                "scope_selectors": {"repository": [selector("repoMatches", "frozen")]},
            },
        ],
        "trigger": {"kind": "Schedule", "settings": {"cron": ""}},
        "scope": {"level": "project", "ref": "keep"},
    })
}

/// The management API over `stores`, with auth, tag retention made by `finish` (given one
/// taking its time from `clock`) and the project `keep`; the API, and retention to carry
/// runs out with.
async fn management(
    stores: &Stores,
    keys_dir: &std::path::Path,
    events: Arc<Captured>,
    clock: berth_app::retention::Clock,
    finish: impl FnOnce(Retention) -> Retention,
) -> (Api, Arc<Retention>) {
    let (auth, _ring) = auth_over(stores, keys_dir).await;
    let registry = Arc::new(stores.registry_with(|registry| registry.with_events(events.clone())));
    let retention = Retention::new(
        stores
            .retention
            .clone()
            .expect("the storage keeps retention records"),
        stores.metadata.clone(),
        registry,
    )
    .with_statistics(stores.statistics.clone().expect("the storage counts pulls"))
    .with_clock(clock);
    let retention = Arc::new(finish(retention));
    let router = berth_runtime::Routes::new()
        .accounts(&auth, stores.accounts.clone(), stores.metadata.clone())
        .statistics(stores.statistics.clone())
        .retention(Some(retention.clone()))
        .build();
    let (addr, _server) = serve_on_loopback(router).await;
    let api = Api {
        base: format!("http://{addr}/api/v2.0"),
        client: reqwest::Client::new(),
    };
    let created = api
        .call(
            reqwest::Method::POST,
            "/projects",
            Some(json!({"project_name": "keep", "public": false})),
        )
        .await;
    assert_eq!(created.status(), 201);
    (api, retention)
}

/// Counts pushes and pulls at their known times, as the statistics store counts events.
async fn record(stores: &Stores, counts: &[Count]) {
    stores
        .statistics
        .as_ref()
        .expect("the storage counts pulls")
        .record(counts)
        .await
        .expect("the counts are recorded");
}

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .basic_auth("admin", Some(ADMIN_PASSWORD));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("the API answers")
    }

    async fn json(&self, path: &str) -> Value {
        let reply = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(reply.status(), 200, "GET {path}");
        reply.json().await.expect("JSON")
    }

    /// Starts a run and returns its execution id, from the `Location`.
    async fn start(&self, policy: u64, dry_run: bool) -> u64 {
        let path = format!("/retentions/{policy}/executions");
        let reply = self
            .call(
                reqwest::Method::POST,
                &path,
                Some(json!({"dry_run": dry_run})),
            )
            .await;
        created_id(reply)
    }
}

/// The id a `201 Created` names at the end of its `Location`.
fn created_id(reply: reqwest::Response) -> u64 {
    assert_eq!(reply.status(), 201);
    let location = reply.headers()["location"].to_str().expect("ASCII");
    assert!(location.starts_with("/api/v2.0/retentions/"), "{location}");
    location
        .rsplit('/')
        .next()
        .and_then(|id| id.parse().ok())
        .expect("an id ends the Location")
}

/// Carries the running executions out a repository an invocation, as the maintenance
/// function does; returns how many invocations it took.
async fn carry_out(retention: &Retention) -> usize {
    let mut invocations = 0;
    while retention.tick(1).await.expect("a retention step") {
        invocations += 1;
        assert!(invocations < 100, "the run ends");
    }
    invocations
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_policy_keeps_exactly_what_its_rules_name() {
    retention_scenario(None).await;
}

/// The same on Garage and DynamoDB Local.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Garage and DynamoDB Local: scripts/test-all.sh starts them"]
async fn a_policy_keeps_exactly_what_its_rules_name_on_s3_and_dynamodb() {
    let sandbox = AwsSandbox::new().await;
    let mut storage = sandbox.storage();
    storage.s3.redirect = false;
    retention_scenario(Some(storage)).await;
}

async fn retention_scenario(storage: Option<StorageConfig>) {
    let (registry, stores) = TestRegistry::start_with_stores_on(storage).await;
    let keys = tempfile::tempdir().expect("a directory for the token keys");
    let events = Arc::new(Captured::default());
    let clock = Arc::new(|| NOW);
    let (api, retention) = management(&stores, keys.path(), events.clone(), clock, |r| r).await;

    // The project: 20 tagged artifacts in each of five repositories, an untagged one in web
    // and one in db; each push and pull counted at its known time.
    let mut artifacts = Vec::new();
    let mut counts = Vec::new();
    let mut count = |repository: &str, digest: &str, at_ms: u64, pull: bool| {
        counts.push(Count {
            id: 1_000_000 + counts.len() as u64,
            repository: format!("keep/{repository}").parse().expect("a name"),
            digest: digest.parse::<Digest>().expect("a digest"),
            at_ms,
            pull,
        });
    };
    for repository in REPOSITORIES {
        let full = format!("keep/{repository}");
        for j in 0..PER_REPOSITORY {
            let image = Image::oci(&format!("{repository} {j} {}", uuid::Uuid::new_v4()));
            let digest = registry.push_image(&full, &tag_of(j), &image).await;
            count(repository, &digest, pushed_ms(j), false);
            if let Some(at) = pulled_ms(j) {
                count(repository, &digest, at, true);
            }
            artifacts.push(Artifact {
                repository: repository.to_owned(),
                tag: Some(tag_of(j)),
                digest,
                retained: expected_retained(repository, Some(j)),
                untouched: repository == "frozen",
            });
        }
    }
    for repository in ["web", "db"] {
        let image = Image::oci(&format!("untagged {repository} {}", uuid::Uuid::new_v4()));
        let digest = registry
            .push_image(&format!("keep/{repository}"), &image.digest(), &image)
            .await;
        count(repository, &digest, NOW - 30 * DAY_MS, false);
        if repository == "web" {
            count(repository, &digest, NOW - DAY_MS, true);
        }
        artifacts.push(Artifact {
            repository: repository.to_owned(),
            tag: None,
            digest,
            retained: expected_retained(repository, None),
            untouched: false,
        });
    }
    record(&stores, &counts).await;
    assert_eq!(artifacts.iter().filter(|a| a.tag.is_some()).count(), 100);

    // The policy, through the API.
    let reply = api
        .call(reqwest::Method::POST, "/retentions", Some(policy_body()))
        .await;
    let policy = created_id(reply);
    let shown = api.json(&format!("/retentions/{policy}")).await;
    assert_eq!(shown["scope"], json!({"level": "project", "ref": "keep"}));
    assert_eq!(shown["rules"].as_array().map(Vec::len), Some(4));
    let project = api.json("/projects/keep").await;
    assert_eq!(
        project["metadata"]["retention_id"],
        json!(policy.to_string())
    );
    let again = api
        .call(reqwest::Method::POST, "/retentions", Some(policy_body()))
        .await;
    assert_eq!(again.status(), 400, "a project has one policy");

    let per_repository = |artifacts: &[Artifact]| {
        let mut expected: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for artifact in artifacts.iter().filter(|a| !a.untouched) {
            let entry = expected
                .entry(format!("keep/{}", artifact.repository))
                .or_default();
            entry.0 += 1;
            entry.1 += u64::from(artifact.retained);
        }
        expected
    };
    let expected_tasks = per_repository(&artifacts);
    let doomed: BTreeSet<&str> = artifacts
        .iter()
        .filter(|a| !a.retained)
        .map(|a| a.digest.as_str())
        .collect();
    assert_eq!(doomed.len(), 14 + 14 + 18 + 13, "the rules' arithmetic");

    // A dry run: the tasks say what would go, nothing goes.
    let dry = api.start(policy, true).await;
    let steps = carry_out(&retention).await;
    assert!(
        steps >= expected_tasks.len(),
        "a repository a step: {steps}"
    );
    let tasks = check_run(&api, policy, dry, true, &expected_tasks).await;
    let mut would_go = BTreeSet::new();
    for task in &tasks {
        let log = api
            .call(
                reqwest::Method::GET,
                &format!("/retentions/{policy}/executions/{dry}/tasks/{}", task["id"]),
                None,
            )
            .await
            .text()
            .await
            .expect("a log");
        for line in log.lines().filter(|line| line.contains(": DEL")) {
            assert!(line.ends_with("DEL (dry run: not deleted)"), "{line}");
            let digest = line
                .split_once('@')
                .and_then(|(_, rest)| rest.split_once(' '))
                .map(|(digest, _)| digest.to_owned())
                .expect("a digest in the line");
            would_go.insert(digest);
        }
    }
    assert_eq!(
        would_go.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        doomed
    );
    for artifact in &artifacts {
        let path = format!(
            "/v2/keep/{}/manifests/{}",
            artifact.repository, artifact.digest
        );
        registry.head(&path).await.assert_status(200);
    }
    assert!(deletions(&events).is_empty(), "a dry run deletes nothing");

    // The real run keeps exactly what the rules name.
    let real = api.start(policy, false).await;
    carry_out(&retention).await;
    check_run(&api, policy, real, false, &expected_tasks).await;
    for artifact in &artifacts {
        let path = format!(
            "/v2/keep/{}/manifests/{}",
            artifact.repository, artifact.digest
        );
        let expected = if artifact.retained { 200 } else { 404 };
        registry.head(&path).await.assert_status(expected);
    }
    for repository in REPOSITORIES {
        let listed = registry
            .get(&format!("/v2/keep/{repository}/tags/list"))
            .await;
        listed.assert_status(200);
        let body: Value = serde_json::from_slice(&listed.body).expect("JSON");
        let tags: BTreeSet<String> = body["tags"]
            .as_array()
            .map(|tags| {
                tags.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let kept: BTreeSet<String> = artifacts
            .iter()
            .filter(|a| a.repository == repository && a.retained)
            .filter_map(|a| a.tag.clone())
            .collect();
        assert_eq!(tags, kept, "the tags left in keep/{repository}");
    }
    let deleted: BTreeSet<String> = deletions(&events).into_iter().collect();
    assert_eq!(
        deleted.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        doomed,
        "each deletion is published once, as a manifest deletion"
    );
    let executions = api.json(&format!("/retentions/{policy}/executions")).await;
    let ids: Vec<u64> = executions
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|e| e["id"].as_u64())
        .collect();
    assert_eq!(ids, [real, dry], "newest first");

    // A deleted project takes its policy along: a new project of its name has none.
    let project = |name: &str| json!({"project_name": name, "public": false});
    let reply = api
        .call(reqwest::Method::POST, "/projects", Some(project("brief")))
        .await;
    assert_eq!(reply.status(), 201);
    let mut body = policy_body();
    body["scope"]["ref"] = json!("brief");
    let reply = api
        .call(reqwest::Method::POST, "/retentions", Some(body))
        .await;
    let brief = created_id(reply);
    let deleted = api
        .call(reqwest::Method::DELETE, "/projects/brief", None)
        .await;
    assert_eq!(deleted.status(), 200);
    let gone = api
        .call(reqwest::Method::GET, &format!("/retentions/{brief}"), None)
        .await;
    assert_eq!(gone.status(), 404);
    let reply = api
        .call(reqwest::Method::POST, "/projects", Some(project("brief")))
        .await;
    assert_eq!(reply.status(), 201);
    let again = api.json("/projects/brief").await;
    assert_eq!(again["metadata"]["retention_id"], Value::Null);
}

/// The digests of the manifest deletions published, by retention.
fn deletions(events: &Captured) -> Vec<String> {
    events
        .0
        .lock()
        .expect("the event list")
        .iter()
        .filter_map(|event| match &event.kind {
            EventKind::ManifestDeleted { digest, .. } => {
                assert_eq!(event.actor, berth_core::Actor::System("retention".into()));
                Some(digest.to_string())
            }
            _ => None,
        })
        .collect()
}

/// Checks execution `id` ended well with one task per covered repository, each with the
/// expected total and retained counts; returns the tasks.
async fn check_run(
    api: &Api,
    policy: u64,
    id: u64,
    dry_run: bool,
    expected: &BTreeMap<String, (u64, u64)>,
) -> Vec<Value> {
    let executions = api.json(&format!("/retentions/{policy}/executions")).await;
    let execution = executions
        .as_array()
        .expect("a list")
        .iter()
        .find(|e| e["id"] == json!(id))
        .cloned()
        .expect("the execution is listed");
    assert_eq!(execution["status"], "Success", "{execution}");
    assert_eq!(execution["dry_run"], dry_run);
    assert_eq!(execution["trigger"], "MANUAL");
    assert_eq!(execution["policy_id"], policy);
    assert!(execution["end_time"].is_string());
    let tasks = api
        .json(&format!(
            "/retentions/{policy}/executions/{id}/tasks?page_size=100"
        ))
        .await;
    let tasks = tasks.as_array().expect("a list").clone();
    let found: BTreeMap<String, (u64, u64)> = tasks
        .iter()
        .map(|task| {
            assert_eq!(task["status"], "Success", "{task}");
            (
                task["repository"].as_str().expect("a name").to_owned(),
                (
                    task["total"].as_u64().expect("a total"),
                    task["retained"].as_u64().expect("a count"),
                ),
            )
        })
        .collect();
    assert_eq!(&found, expected, "tasks of execution {id}");
    tasks
}

/// A policy's schedule starts a run when its time comes (not before), as the maintenance
/// function's ticks see it; an artifact the project's immutability rule protects is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schedule_starts_a_run_when_due_and_immutable_artifacts_stay() {
    let (registry, stores) = TestRegistry::start_with_stores().await;
    let keys = tempfile::tempdir().expect("a directory for the token keys");
    let now = Arc::new(AtomicU64::new(NOW));
    let clock = {
        let now = now.clone();
        Arc::new(move || now.load(Ordering::SeqCst))
    };
    let (api, retention) = management(
        &stores,
        keys.path(),
        Arc::new(Captured::default()),
        clock,
        |retention| {
            retention.with_immutability(Arc::new(berth_app::immutable::ProjectRules::new(
                stores.accounts.clone(),
            )))
        },
    )
    .await;
    let mut counts = Vec::new();
    let mut digests = BTreeMap::new();
    for (days_ago, tag) in [(3, "v1"), (2, "v2"), (1, "v3")] {
        let image = Image::oci(&format!("{tag} {}", uuid::Uuid::new_v4()));
        let digest = registry.push_image("keep/app", tag, &image).await;
        counts.push(Count {
            id: 2_000_000 + days_ago,
            repository: "keep/app".parse().expect("a name"),
            digest: digest.parse().expect("a digest"),
            at_ms: NOW - days_ago * DAY_MS,
            pull: false,
        });
        digests.insert(tag, digest);
    }
    record(&stores, &counts).await;
    // The project's immutability rule protects v1.
    let reply = api
        .call(
            reqwest::Method::POST,
            "/projects/keep/immutabletagrules",
            Some(json!({
                "action": "immutable", "template": "immutable_template",
                "tag_selectors": [{"kind": "doublestar", "decoration": "matches", "pattern": "v1"}],
                "scope_selectors": {"repository": [
                    {"kind": "doublestar", "decoration": "repoMatches", "pattern": "**"}
                ]},
            })),
        )
        .await;
    assert_eq!(reply.status(), reqwest::StatusCode::CREATED);
    let mut body = policy_body();
    body["rules"] = json!([{
        "action": "retain", "template": "latestPushedK", "params": {"latestPushedK": 1},
        "tag_selectors": [{"kind": "doublestar", "decoration": "matches", "pattern": "**"}],
    }]);
    body["trigger"]["settings"]["cron"] = json!("0 0 3 * * *");
    let reply = api
        .call(reqwest::Method::POST, "/retentions", Some(body))
        .await;
    let policy = created_id(reply);

    assert!(
        !retention.tick(10).await.expect("a tick"),
        "nothing is due yet"
    );
    let executions = api.json(&format!("/retentions/{policy}/executions")).await;
    assert_eq!(executions, json!([]));

    // A day later, 03:00 has come: the tick starts the run and carries it out.
    now.store(NOW + DAY_MS, Ordering::SeqCst);
    carry_out(&retention).await;
    let executions = api.json(&format!("/retentions/{policy}/executions")).await;
    assert_eq!(executions.as_array().map(Vec::len), Some(1), "{executions}");
    assert_eq!(executions[0]["trigger"], "SCHEDULE");
    assert_eq!(executions[0]["status"], "Success");
    assert_eq!(executions[0]["dry_run"], false);
    for (tag, kept) in [("v1", true), ("v2", false), ("v3", true)] {
        let path = format!("/v2/keep/app/manifests/{}", digests[tag]);
        registry
            .head(&path)
            .await
            .assert_status(if kept { 200 } else { 404 });
    }
    let id = executions[0]["id"].as_u64().expect("an id");
    let tasks = api
        .json(&format!("/retentions/{policy}/executions/{id}/tasks"))
        .await;
    assert_eq!(
        (tasks[0]["total"].as_u64(), tasks[0]["retained"].as_u64()),
        (Some(3), Some(2))
    );
    let log = api
        .call(
            reqwest::Method::GET,
            &format!("/retentions/{policy}/executions/{id}/tasks/1"),
            None,
        )
        .await
        .text()
        .await
        .expect("a log");
    assert!(log.contains("[v1]: RETAIN (immutable)"), "{log}");

    // The next tick within the same day starts nothing more.
    assert!(!retention.tick(10).await.expect("a tick"));
    let executions = api.json(&format!("/retentions/{policy}/executions")).await;
    assert_eq!(executions.as_array().map(Vec::len), Some(1));
}
