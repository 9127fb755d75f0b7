//! Tag immutability over real HTTP, with the registry composed as `berth serve` composes it
//! (`Stores::registry_with`): the rules' API in Harbor's shape with its validation and
//! permissions, and the rules enforced on pushes and deletions through `/v2` and through the
//! artifact API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_core::events::{AccountResource, Operation};
use berth_core::{EventBus, EventKind};
use berth_runtime::Routes;
use berth_tests::authed::{ADMIN_PASSWORD, Recorder, authed_parts, serve_on_loopback};
use berth_tests::{media, sha256};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

const ADMIN: (&str, &str) = ("admin", ADMIN_PASSWORD);
const MAINTAINER: (&str, &str) = ("mia", "Maintainer-1");
const DEVELOPER: (&str, &str) = ("dev", "Developer-1");
const OUTSIDER: (&str, &str) = ("out", "Outsider-1");
const RULES: &str = "/projects/team/immutabletagrules";

struct Berth {
    addr: SocketAddr,
    client: reqwest::Client,
    events: Arc<Recorder>,
    _data_dir: TempDir,
}

/// An answer: status, the `Location`, `X-Total-Count` and `Link` headers, and the body.
struct Answer {
    status: StatusCode,
    location: String,
    total: String,
    link: String,
    body: Value,
}

impl Answer {
    /// The first OCI error's code and message.
    fn error(&self) -> (&str, &str) {
        let error = &self.body["errors"][0];
        (
            error["code"].as_str().unwrap_or_default(),
            error["message"].as_str().unwrap_or_default(),
        )
    }
}

impl Berth {
    /// The project `team` (private) with `mia` its maintainer and `dev` its developer, and
    /// `out`, a user in no project.
    async fn start() -> Self {
        let parts = authed_parts().await;
        let events = Arc::new(Recorder::default());
        let bus = Arc::new(EventBus::new().subscribe(events.clone()));
        let registry = Arc::new(
            parts
                .stores
                .registry_with(|registry| registry.with_events(bus.clone())),
        );
        let router = Routes::new()
            .registry(registry, berth_runtime::Settings::default())
            .accounts(
                &parts.auth,
                parts.stores.accounts.clone(),
                parts.stores.metadata.clone(),
            )
            .events(bus)
            .build();
        let (addr, _) = serve_on_loopback(router).await;
        let berth = Self {
            addr,
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("a client"),
            events,
            _data_dir: parts.data_dir,
        };
        for (user, password) in [MAINTAINER, DEVELOPER, OUTSIDER] {
            berth
                .ok(
                    Method::POST,
                    "/users",
                    json!({"username": user, "password": password}),
                )
                .await;
        }
        berth
            .ok(
                Method::POST,
                "/projects",
                json!({"project_name": "team", "metadata": {"public": "false"}}),
            )
            .await;
        for (user, role) in [(MAINTAINER.0, 4), (DEVELOPER.0, 2)] {
            berth
                .ok(
                    Method::POST,
                    "/projects/team/members",
                    json!({"role_id": role, "member_user": {"username": user}}),
                )
                .await;
        }
        berth
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn answer(response: reqwest::Response) -> Answer {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let (status, location, total, link) = (
            response.status(),
            header("location"),
            header("x-total-count"),
            header("link"),
        );
        let text = response.text().await.expect("a body");
        Answer {
            status,
            location,
            total,
            link,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    /// A management API call as `credentials` (anonymous without).
    async fn api(
        &self,
        method: Method,
        path: &str,
        credentials: Option<(&str, &str)>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self
            .client
            .request(method, self.url(&format!("/api/v2.0{path}")));
        if let Some((user, password)) = credentials {
            request = request.basic_auth(user, Some(password));
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Self::answer(request.send().await.expect("the API answers")).await
    }

    /// An API call by the admin that must succeed.
    async fn ok(&self, method: Method, path: &str, body: Value) -> Answer {
        let answer = self.api(method, path, Some(ADMIN), Some(body)).await;
        assert!(
            answer.status.is_success(),
            "{path}: {} {}",
            answer.status,
            answer.body
        );
        answer
    }

    /// The admin's token for `team/<repository>`.
    async fn token(&self, repository: &str) -> String {
        let response = self
            .client
            .get(self.url("/service/token"))
            .query(&[
                ("service", "berth"),
                (
                    "scope",
                    &format!("repository:team/{repository}:pull,push,delete"),
                ),
            ])
            .basic_auth(ADMIN.0, Some(ADMIN.1))
            .send()
            .await
            .expect("the token endpoint answers");
        let body: Value = response.json().await.expect("a token");
        body["token"].as_str().expect("a token").to_owned()
    }

    async fn registry(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Answer {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some((content_type, bytes)) = body {
            request = request.header("Content-Type", content_type).body(bytes);
        }
        Self::answer(request.send().await.expect("the registry answers")).await
    }

    /// Pushes a config-only image labelled `label` to `team/<repository>:<tag>`: the
    /// manifest PUT's answer and the manifest's digest.
    async fn push(&self, repository: &str, tag: &str, label: &str) -> (Answer, String) {
        let token = self.token(repository).await;
        let config = json!({ "label": label }).to_string().into_bytes();
        let digest = sha256(&config);
        let upload = self
            .registry(
                Method::POST,
                &format!("/v2/team/{repository}/blobs/uploads/?digest={digest}"),
                &token,
                Some(("application/octet-stream", config.clone())),
            )
            .await;
        assert_eq!(upload.status, StatusCode::CREATED, "{}", upload.body);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": digest, "size": config.len()},
            "layers": [],
        })
        .to_string()
        .into_bytes();
        let manifest_digest = sha256(&manifest);
        let put = self
            .registry(
                Method::PUT,
                &format!("/v2/team/{repository}/manifests/{tag}"),
                &token,
                Some((media::OCI_MANIFEST, manifest)),
            )
            .await;
        (put, manifest_digest)
    }

    /// The digest `team/<repository>:<tag>` points at.
    async fn digest_of(&self, repository: &str, tag: &str) -> Option<String> {
        let answer = self
            .api(
                Method::GET,
                &format!("/projects/team/repositories/{repository}/artifacts/{tag}"),
                Some(ADMIN),
                None,
            )
            .await;
        answer.body["digest"].as_str().map(str::to_owned)
    }

    /// The rule changes published since the last call.
    fn rule_changes(&self) -> Vec<(Operation, String)> {
        self.events
            .take()
            .into_iter()
            .filter_map(|event| match event.kind {
                EventKind::AccountChanged {
                    resource: AccountResource::ImmutableRule,
                    operation,
                    name,
                } => Some((operation, name)),
                _ => None,
            })
            .collect()
    }
}

fn rule(repositories: &[(&str, &str)], tags: &[(&str, &str)]) -> Value {
    let selectors = |list: &[(&str, &str)]| {
        list.iter()
            .map(|(decoration, pattern)| {
                json!({"kind": "doublestar", "decoration": decoration, "pattern": pattern})
            })
            .collect::<Vec<_>>()
    };
    json!({
        "disabled": false,
        "action": "immutable",
        "template": "immutable_template",
        "params": {},
        "tag_selectors": selectors(tags),
        "scope_selectors": {"repository": selectors(repositories)},
    })
}

#[tokio::test]
async fn rules_are_made_listed_changed_and_deleted_by_maintainers_in_harbors_shape() {
    let berth = Berth::start().await;
    let v_tags = rule(
        &[("repoMatches", "**")],
        &[("matches", "v*"), ("excludes", "*-dev")],
    );

    let created = berth
        .api(Method::POST, RULES, Some(MAINTAINER), Some(v_tags.clone()))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(
        created.location,
        "/api/v2.0/projects/team/immutabletagrules/1"
    );
    let listed = berth.api(Method::GET, RULES, Some(MAINTAINER), None).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(
        listed.body,
        json!([{
            "id": 1,
            "priority": 0,
            "disabled": false,
            "action": "immutable",
            "template": "immutable_template",
            "params": {},
            "tag_selectors": [
                {"kind": "doublestar", "decoration": "matches", "pattern": "v*"},
                {"kind": "doublestar", "decoration": "excludes", "pattern": "*-dev"},
            ],
            "scope_selectors": {"repository": [
                {"kind": "doublestar", "decoration": "repoMatches", "pattern": "**"},
            ]},
        }])
    );
    let again = berth
        .api(Method::POST, RULES, Some(ADMIN), Some(v_tags.clone()))
        .await;
    assert_eq!(
        again.status,
        StatusCode::CONFLICT,
        "the same selectors twice"
    );

    for pattern in ["release-*", "stable"] {
        let answer = berth
            .api(
                Method::POST,
                RULES,
                Some(ADMIN),
                Some(rule(
                    &[("repoExcludes", "scratch/**")],
                    &[("matches", pattern)],
                )),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    }
    let page = berth
        .api(
            Method::GET,
            &format!("{RULES}?page=1&page_size=2"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(page.body.as_array().map(Vec::len), Some(2));
    assert_eq!(page.total, "3");
    assert!(
        page.link.contains("page=2") && page.link.contains("rel=\"next\""),
        "{}",
        page.link
    );

    let mut disabled = v_tags.clone();
    disabled["disabled"] = json!(true);
    disabled["id"] = json!(1);
    let updated = berth
        .api(
            Method::PUT,
            &format!("{RULES}/1"),
            Some(MAINTAINER),
            Some(disabled),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    let listed = berth.api(Method::GET, RULES, Some(ADMIN), None).await;
    assert_eq!(listed.body[0]["disabled"], json!(true));
    let deleted = berth
        .api(
            Method::DELETE,
            &format!("{RULES}/2"),
            Some(MAINTAINER),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    let listed = berth.api(Method::GET, RULES, Some(ADMIN), None).await;
    let ids: Vec<&Value> = listed
        .body
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| &r["id"])
        .collect();
    assert_eq!(ids, [&json!(1), &json!(3)]);
    let created = berth
        .api(
            Method::POST,
            RULES,
            Some(ADMIN),
            Some(rule(&[("repoMatches", "**")], &[("matches", "x")])),
        )
        .await;
    assert!(
        created.location.ends_with("/4"),
        "ids are never reused: {}",
        created.location
    );

    assert_eq!(
        berth.rule_changes(),
        [
            (Operation::Create, "team/1".to_owned()),
            (Operation::Create, "team/2".to_owned()),
            (Operation::Create, "team/3".to_owned()),
            (Operation::Update, "team/1".to_owned()),
            (Operation::Delete, "team/2".to_owned()),
            (Operation::Create, "team/4".to_owned()),
        ],
        "each change is published as a change of the project's rule"
    );
}

#[tokio::test]
async fn only_maintainers_admins_and_system_admins_see_and_change_rules() {
    let berth = Berth::start().await;
    let body = rule(&[("repoMatches", "**")], &[("matches", "v*")]);
    let cases = [
        (Method::GET, RULES, Some(DEVELOPER), StatusCode::FORBIDDEN),
        (Method::POST, RULES, Some(DEVELOPER), StatusCode::FORBIDDEN),
        (Method::GET, RULES, Some(OUTSIDER), StatusCode::NOT_FOUND),
        (Method::POST, RULES, Some(OUTSIDER), StatusCode::NOT_FOUND),
        (Method::GET, RULES, None, StatusCode::UNAUTHORIZED),
        (Method::POST, RULES, Some(MAINTAINER), StatusCode::CREATED),
        (Method::GET, RULES, Some(MAINTAINER), StatusCode::OK),
        (Method::GET, RULES, Some(ADMIN), StatusCode::OK),
    ];
    for (method, path, credentials, expected) in cases {
        let answer = berth
            .api(method.clone(), path, credentials, Some(body.clone()))
            .await;
        assert_eq!(
            answer.status, expected,
            "{method} as {credentials:?}: {}",
            answer.body
        );
    }
    let path = format!("{RULES}/1");
    for (method, credentials, expected) in [
        (Method::PUT, DEVELOPER, StatusCode::FORBIDDEN),
        (Method::DELETE, DEVELOPER, StatusCode::FORBIDDEN),
        (Method::DELETE, OUTSIDER, StatusCode::NOT_FOUND),
    ] {
        let answer = berth
            .api(method.clone(), &path, Some(credentials), Some(body.clone()))
            .await;
        assert_eq!(answer.status, expected, "{method} as {credentials:?}");
    }
    let missing = berth
        .api(
            Method::GET,
            "/projects/nothing/immutabletagrules",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn invalid_rules_are_refused_with_a_message_that_says_why() {
    let berth = Berth::start().await;
    let good = rule(&[("repoMatches", "**")], &[("matches", "v*")]);
    let mut label = good.clone();
    label["tag_selectors"][0]["kind"] = json!("label");
    let mut repo_decoration_on_tags = good.clone();
    repo_decoration_on_tags["tag_selectors"][0]["decoration"] = json!("repoMatches");
    let mut namespace = good.clone();
    namespace["scope_selectors"] =
        json!({"namespace": [{"kind": "doublestar", "decoration": "nsMatches", "pattern": "**"}]});
    let mut retain = good.clone();
    retain["action"] = json!("retain");
    let mut no_tags = good.clone();
    no_tags["tag_selectors"] = json!([]);
    let cases = [
        (label, "\"label\""),
        (repo_decoration_on_tags, "\"repoMatches\""),
        (rule(&[("repoMatches", "**")], &[("matches", "v[1")]), "v[1"),
        (rule(&[("repoMatches", "")], &[("matches", "v*")]), "empty"),
        (namespace, "\"namespace\""),
        (retain, "\"retain\""),
        (no_tags, "tag selector"),
        (json!({"tag_selectors": "v*"}), "invalid JSON"),
    ];
    for (body, expected) in cases {
        let answer = berth
            .api(Method::POST, RULES, Some(ADMIN), Some(body.clone()))
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        let (code, message) = answer.error();
        assert_eq!(code, "BAD_REQUEST");
        assert!(message.contains(expected), "{expected} in {message:?}");
    }
    let listed = berth.api(Method::GET, RULES, Some(ADMIN), None).await;
    assert_eq!(listed.body, json!([]), "nothing was stored");

    berth.ok(Method::POST, RULES, good.clone()).await;
    let mut other_id = good.clone();
    other_id["id"] = json!(7);
    let mismatch = berth
        .api(
            Method::PUT,
            &format!("{RULES}/1"),
            Some(ADMIN),
            Some(other_id),
        )
        .await;
    assert_eq!(mismatch.status, StatusCode::BAD_REQUEST);
    let not_a_number = berth
        .api(
            Method::PUT,
            &format!("{RULES}/one"),
            Some(ADMIN),
            Some(good.clone()),
        )
        .await;
    assert_eq!(not_a_number.status, StatusCode::BAD_REQUEST);
    for method in [Method::PUT, Method::DELETE] {
        let answer = berth
            .api(
                method,
                &format!("{RULES}/9"),
                Some(ADMIN),
                Some(good.clone()),
            )
            .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn immutable_tags_neither_move_nor_go_while_an_enabled_rule_selects_them() {
    let berth = Berth::start().await;
    let (first, v1) = berth.push("app", "v1", "one").await;
    assert_eq!(first.status, StatusCode::CREATED);
    let (_, dev1) = berth.push("app", "v1-dev", "one").await;
    assert_eq!(v1, dev1);
    berth.push("scratch/app", "v1", "one").await;
    berth
        .ok(
            Method::POST,
            RULES,
            rule(
                &[("repoExcludes", "scratch/**")],
                &[("matches", "v*"), ("excludes", "*-dev")],
            ),
        )
        .await;

    let (moved, _) = berth.push("app", "v1", "two").await;
    assert_eq!(moved.status, StatusCode::PRECONDITION_FAILED);
    let (code, message) = moved.error();
    assert_eq!(code, "PRECONDITION");
    for part in [
        "team/app:v1",
        "configured as immutable",
        "rule 1",
        "\"v*\"",
        "\"*-dev\"",
        "scratch/**",
    ] {
        assert!(message.contains(part), "{part} in {message:?}");
    }
    assert_eq!(
        berth.digest_of("app", "v1").await.as_deref(),
        Some(v1.as_str()),
        "v1 stays"
    );
    let (same, _) = berth.push("app", "v1", "one").await;
    assert_eq!(same.status, StatusCode::CREATED, "the same manifest again");
    let (new, _) = berth.push("app", "v2", "two").await;
    assert_eq!(
        new.status,
        StatusCode::CREATED,
        "a new tag that the rule selects"
    );
    let (moved, _) = berth.push("app", "v2", "three").await;
    assert_eq!(
        moved.status,
        StatusCode::PRECONDITION_FAILED,
        "... is immutable from then on"
    );
    let (excluded, _) = berth.push("app", "v1-dev", "two").await;
    assert_eq!(
        excluded.status,
        StatusCode::CREATED,
        "an excluded tag moves"
    );
    let (elsewhere, _) = berth.push("scratch/app", "v1", "two").await;
    assert_eq!(
        elsewhere.status,
        StatusCode::CREATED,
        "in an excluded repository too"
    );

    let token = berth.token("app").await;
    for reference in ["v1", v1.as_str()] {
        let answer = berth
            .registry(
                Method::DELETE,
                &format!("/v2/team/app/manifests/{reference}"),
                &token,
                None,
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::PRECONDITION_FAILED,
            "DELETE /v2 {reference}"
        );
        assert!(
            answer.error().1.contains("team/app:v1"),
            "{}",
            answer.error().1
        );
    }
    let artifact = "/projects/team/repositories/app/artifacts";
    for path in [
        format!("{artifact}/v1/tags/v1"),
        format!("{artifact}/v1"),
        format!("{artifact}/{v1}"),
        "/projects/team/repositories/app".to_owned(),
    ] {
        let answer = berth.api(Method::DELETE, &path, Some(ADMIN), None).await;
        assert_eq!(
            answer.status,
            StatusCode::PRECONDITION_FAILED,
            "DELETE {path}"
        );
        assert_eq!(answer.error().0, "PRECONDITION");
    }
    let pulled = berth
        .registry(Method::GET, "/v2/team/app/manifests/v1", &token, None)
        .await;
    assert_eq!(
        pulled.status,
        StatusCode::OK,
        "an immutable tag still pulls"
    );
    let tagged = berth
        .api(
            Method::POST,
            &format!("{artifact}/v1/tags"),
            Some(ADMIN),
            Some(json!({"name": "v9"})),
        )
        .await;
    assert_eq!(
        tagged.status,
        StatusCode::CREATED,
        "a new tag the rule selects"
    );

    let mut disabled = rule(
        &[("repoExcludes", "scratch/**")],
        &[("matches", "v*"), ("excludes", "*-dev")],
    );
    disabled["disabled"] = json!(true);
    berth.ok(Method::PUT, &format!("{RULES}/1"), disabled).await;
    let (moved, two) = berth.push("app", "v1", "two").await;
    assert_eq!(
        moved.status,
        StatusCode::CREATED,
        "a disabled rule protects nothing"
    );
    assert_eq!(berth.digest_of("app", "v1").await, Some(two));
    let deleted = berth
        .registry(Method::DELETE, "/v2/team/app/manifests/v2", &token, None)
        .await;
    assert_eq!(deleted.status, StatusCode::ACCEPTED);
}
