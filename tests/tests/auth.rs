//! Token auth over real HTTP against a registry with auth on: every probe the auth issue
//! lists must be refused, and what the roles allow must work. The registry runs in this
//! process on a loopback port, with embedded storage and its own token keys.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use berth_auth::{Action, KeyRing, ResourceAccess, TokenIssuer, generate_es256_pem, unix_now};
use berth_core::events::{AccountResource, Operation};
use berth_core::{Actor, EntryPoint, Event, EventBus, EventKind};
use berth_runtime::Routes;
use berth_runtime::auth::{PasswordHasher, bootstrap};
use berth_runtime::{AccountStore, EventRecorder, Records};
use berth_tests::authed::{ADMIN_PASSWORD, AuthedParts, Recorder, authed_parts, serve_on_loopback};
use berth_tests::{media, sha256};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;

const SERVICE: &str = "berth";

struct Registry {
    addr: SocketAddr,
    events: Arc<Recorder>,
    client: reqwest::Client,
    ring: KeyRing,
    accounts: Arc<dyn AccountStore>,
    _data_dir: TempDir,
}

impl Registry {
    async fn start() -> Self {
        let AuthedParts {
            stores,
            auth,
            ring,
            data_dir,
        } = authed_parts().await;
        let events = Arc::new(Recorder::default());
        let audit = stores
            .audit
            .clone()
            .expect("embedded storage keeps an audit log");
        let bus = Arc::new(
            EventBus::new()
                .subscribe(events.clone())
                .subscribe(Arc::new(EventRecorder::start(Records {
                    audit: Some((audit.clone(), Duration::from_secs(86_400))),
                    statistics: stores.statistics.clone(),
                }))),
        );
        let registry = Arc::new(
            berth_core::Registry::new(stores.blobs.clone(), stores.metadata.clone())
                .with_events(bus.clone()),
        );
        let router = Routes::new()
            .registry(registry, berth_runtime::Settings::default())
            .accounts(&auth, stores.accounts.clone(), stores.metadata.clone())
            .events(bus)
            .audit(Some(audit))
            .statistics(stores.statistics.clone())
            .build();
        let (addr, _) = serve_on_loopback(router).await;
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a client");
        Self {
            addr,
            events,
            client,
            ring,
            accounts: stores.accounts,
            _data_dir: data_dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A management API call as `credentials` (`user:password`).
    async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        credentials: Option<(&str, &str)>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, self.url(&format!("/api/v2.0{path}")));
        if let Some((user, password)) = credentials {
            request = request.basic_auth(user, Some(password));
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status();
        let text = response.text().await.expect("a body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let (status, answer) = self
            .api(method, path, Some(("admin", ADMIN_PASSWORD)), Some(body))
            .await;
        assert!(status.is_success(), "{path}: {status} {answer}");
        answer
    }

    /// A token for `scopes` from the token endpoint (anonymous without credentials).
    async fn token(
        &self,
        credentials: Option<(&str, &str)>,
        scopes: &[&str],
    ) -> (StatusCode, String) {
        let mut query = vec![("service", SERVICE.to_owned())];
        query.extend(scopes.iter().map(|scope| ("scope", (*scope).to_owned())));
        let mut request = self.client.get(self.url("/service/token")).query(&query);
        if let Some((user, password)) = credentials {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.expect("the token endpoint answers");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        (
            status,
            body["token"].as_str().unwrap_or_default().to_owned(),
        )
    }

    async fn granted(&self, credentials: Option<(&str, &str)>, scope: &str) -> Value {
        let (status, token) = self.token(credentials, &[scope]).await;
        assert_eq!(status, StatusCode::OK, "{scope}");
        claims(&token)["access"].clone()
    }

    /// Sends a registry request with `token` (none when empty).
    async fn registry(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> reqwest::Response {
        let mut request = self.client.request(method, self.url(path));
        if !token.is_empty() {
            request = request.bearer_auth(token);
        }
        if let Some((content_type, bytes)) = body {
            request = request.header("Content-Type", content_type).body(bytes);
        }
        request.send().await.expect("the registry answers")
    }

    /// Pushes a config-only image to `repository:tag` with `token`; the manifest PUT's
    /// status.
    async fn push(&self, repository: &str, tag: &str, token: &str) -> StatusCode {
        let config = format!("{{\"repository\":\"{repository}\"}}").into_bytes();
        let digest = sha256(&config);
        let upload = self
            .registry(
                reqwest::Method::POST,
                &format!("/v2/{repository}/blobs/uploads/?digest={digest}"),
                token,
                Some(("application/octet-stream", config.clone())),
            )
            .await;
        if upload.status() != StatusCode::CREATED {
            return upload.status();
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": digest, "size": config.len()},
            "layers": [],
        });
        self.registry(
            reqwest::Method::PUT,
            &format!("/v2/{repository}/manifests/{tag}"),
            token,
            Some((media::OCI_MANIFEST, manifest.to_string().into_bytes())),
        )
        .await
        .status()
    }
}

/// The claims of a JWT, unverified.
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

fn challenge(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Users `dev` (developer), `guest` (guest) in the private project `team`, and the public
/// project `open`, where `dev` is a developer too.
async fn populated() -> Registry {
    let registry = Registry::start().await;
    use reqwest::Method;
    for (user, password) in [
        ("dev", "Developer-1"),
        ("guest", "Guest-pw-1"),
        ("other", "Other-pw-1"),
    ] {
        registry
            .admin(
                Method::POST,
                "/users",
                json!({"username": user, "password": password}),
            )
            .await;
    }
    for (project, public) in [("team", false), ("open", true)] {
        registry
            .admin(
                Method::POST,
                "/projects",
                json!({"project_name": project, "metadata": {"public": public.to_string()}}),
            )
            .await;
        for (user, role) in [("dev", 2), ("guest", 3)] {
            registry
                .admin(
                    Method::POST,
                    &format!("/projects/{project}/members"),
                    json!({"role_id": role, "member_user": {"username": user}}),
                )
                .await;
        }
    }
    registry
}

const DEV: Option<(&str, &str)> = Some(("dev", "Developer-1"));
const GUEST: Option<(&str, &str)> = Some(("guest", "Guest-pw-1"));
const OTHER: Option<(&str, &str)> = Some(("other", "Other-pw-1"));
const ADMIN: Option<(&str, &str)> = Some(("admin", ADMIN_PASSWORD));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_check_needs_a_token_and_names_the_token_service() {
    let registry = Registry::start().await;
    let response = registry
        .registry(reqwest::Method::GET, "/v2/", "", None)
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge(&response),
        format!(
            "Bearer realm=\"http://{}/service/token\",service=\"berth\"",
            registry.addr
        )
    );
    let (status, token) = registry.token(None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let response = registry
        .registry(reqwest::Method::GET, "/v2/", &token, None)
        .await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "an anonymous token is a token"
    );

    // Wrong methods on the token endpoint and the API get an error body too.
    for (method, path) in [
        (reqwest::Method::DELETE, "/service/token"),
        (reqwest::Method::PATCH, "/api/v2.0/users"),
    ] {
        let response = registry
            .client
            .request(method.clone(), registry.url(path))
            .send()
            .await
            .expect("an answer");
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let body: Value = response.json().await.expect("a JSON error body");
        assert_eq!(body["errors"][0]["code"], "UNSUPPORTED", "{method} {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_roles_grant_harbors_rights() {
    let registry = populated().await;
    let actions = |access: &Value| -> Vec<String> {
        access
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .flat_map(|e| e["actions"].as_array().cloned().unwrap_or_default())
                    .map(|a| a.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let all = "repository:team/app:pull,push,delete";
    assert!(
        actions(&registry.granted(None, all).await).is_empty(),
        "anonymous, private"
    );
    assert_eq!(
        actions(
            &registry
                .granted(None, "repository:open/app:pull,push")
                .await
        ),
        ["pull"]
    );
    assert_eq!(actions(&registry.granted(GUEST, all).await), ["pull"]);
    assert_eq!(actions(&registry.granted(DEV, all).await), ["pull", "push"]);
    assert!(
        actions(&registry.granted(OTHER, all).await).is_empty(),
        "not a member"
    );
    assert_eq!(
        actions(&registry.granted(ADMIN, all).await),
        ["pull", "push", "delete"]
    );
    assert!(
        actions(
            &registry
                .granted(DEV, "repository:nowhere/app:pull,push")
                .await
        )
        .is_empty(),
        "a project that does not exist grants nothing"
    );
    assert!(actions(&registry.granted(DEV, "registry:catalog:*").await).is_empty());
    assert_eq!(
        actions(&registry.granted(ADMIN, "registry:catalog:*").await),
        ["*"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_probe_is_refused() {
    let registry = populated().await;
    use reqwest::Method;

    // Anonymous push; anonymous pull of a private project.
    let (_, anonymous) = registry
        .token(None, &["repository:team/app:pull,push"])
        .await;
    assert_eq!(
        registry.push("team/app", "v1", &anonymous).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        registry.push("team/app", "v1", "").await,
        StatusCode::UNAUTHORIZED
    );
    let response = registry
        .registry(Method::GET, "/v2/team/app/tags/list", &anonymous, None)
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&response).contains("error=\"insufficient_scope\""));

    // What the developer may do works.
    let (_, push) = registry
        .token(DEV, &["repository:team/app:pull,push"])
        .await;
    assert_eq!(
        registry.push("team/app", "v1", &push).await,
        StatusCode::CREATED
    );

    // A pull-only token used to push.
    let (_, pull) = registry.token(DEV, &["repository:team/app:pull"]).await;
    assert_eq!(
        registry.push("team/app", "v2", &pull).await,
        StatusCode::UNAUTHORIZED
    );
    let response = registry
        .registry(Method::GET, "/v2/team/app/manifests/v1", &pull, None)
        .await;
    assert_eq!(response.status(), StatusCode::OK, "but it pulls");
    let manifest_digest = response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .expect("a digest")
        .to_owned();

    // A token for one repository used on another.
    let response = registry
        .registry(Method::GET, "/v2/team/other/tags/list", &push, None)
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // A guest deleting, even with a token that asked for delete.
    let (_, guest) = registry
        .token(GUEST, &["repository:team/app:pull,delete"])
        .await;
    let path = format!("/v2/team/app/manifests/{manifest_digest}");
    let response = registry.registry(Method::DELETE, &path, &guest, None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let (_, admin) = registry.token(ADMIN, &["repository:team/app:delete"]).await;
    let response = registry.registry(Method::DELETE, &path, &admin, None).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED, "an admin deletes");

    // Tokens the registry did not issue, or no longer accepts.
    let access = vec![ResourceAccess::repository(
        &"team/app".parse().expect("a name"),
        [Action::Pull],
    )];
    let now = unix_now();
    let own = TokenIssuer::new(SERVICE, SERVICE, &registry.ring).expect("an issuer");
    let expired = own
        .issue("dev", access.clone(), now - 7200, None)
        .expect("a token")
        .token;
    let wrong_audience = TokenIssuer::new(SERVICE, "another-registry", &registry.ring)
        .expect("an issuer")
        .issue("dev", access.clone(), now, None)
        .expect("a token")
        .token;
    let wrong_issuer = TokenIssuer::new("someone-else", SERVICE, &registry.ring)
        .expect("an issuer")
        .issue("dev", access.clone(), now, None)
        .expect("a token")
        .token;
    let stranger = KeyRing::from_pems(&[generate_es256_pem().expect("a key")]).expect("a ring");
    let unknown_key = TokenIssuer::new(SERVICE, SERVICE, &stranger)
        .expect("an issuer")
        .issue("dev", access.clone(), now, None)
        .expect("a token")
        .token;
    let valid = own.issue("dev", access, now, None).expect("a token").token;
    let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    let mut signature = URL_SAFE_NO_PAD.decode(&parts[2]).expect("base64url");
    signature[10] ^= 1;
    parts[2] = URL_SAFE_NO_PAD.encode(signature);
    let bad_signature = parts.join(".");
    let alg_none = format!(
        "{}.{}.",
        // With the registry's own kid, so that it is the algorithm that is refused.
        URL_SAFE_NO_PAD.encode(
            json!({"alg": "none", "typ": "JWT", "kid": registry.ring.current_kid()}).to_string()
        ),
        valid.split('.').nth(1).expect("claims")
    );
    let hs256_header = URL_SAFE_NO_PAD.encode(
        json!({"alg": "HS256", "typ": "JWT", "kid": registry.ring.current_kid()}).to_string(),
    );
    let hs256 = format!(
        "{hs256_header}.{}.{}",
        valid.split('.').nth(1).expect("claims"),
        parts[2]
    );
    let (_, refresh_only) = {
        let form = [
            ("grant_type", "password"),
            ("username", "dev"),
            ("password", "Developer-1"),
            ("service", SERVICE),
            ("access_type", "offline"),
            ("client_id", "tests"),
        ];
        let response = registry
            .client
            .post(registry.url("/service/token"))
            .form(&form)
            .send()
            .await
            .expect("a token answer");
        let body: Value = response.json().await.expect("JSON");
        (
            body["access_token"].clone(),
            body["refresh_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    };
    assert!(!refresh_only.is_empty(), "a refresh token was issued");
    let response = registry
        .registry(Method::GET, "/v2/team/app/tags/list", &valid, None)
        .await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the untampered token works"
    );
    for (what, token) in [
        ("an expired token", expired),
        ("a token for another audience", wrong_audience),
        ("a token from another issuer", wrong_issuer),
        ("a token signed by an unknown key", unknown_key),
        ("a token with a bad signature", bad_signature),
        ("an alg:none token", alg_none),
        ("an HS256 token keyed with anything", hs256),
        ("a refresh token used as an access token", refresh_only),
    ] {
        let response = registry
            .registry(Method::GET, "/v2/team/app/tags/list", &token, None)
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert!(
            challenge(&response).contains("error=\"invalid_token\""),
            "{what}"
        );
    }

    // A non-admin creating users; a developer managing members.
    let (status, _) = registry
        .api(
            Method::POST,
            "/users",
            DEV,
            Some(json!({"username": "mallory", "password": "Mallory-pw-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = registry
        .api(
            Method::POST,
            "/projects/team/members",
            DEV,
            Some(json!({"role_id": 1, "member_user": {"username": "other"}})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robot_accounts_have_their_permissions_only() {
    let registry = populated().await;
    use reqwest::Method;
    let created = registry
        .admin(
            Method::POST,
            "/robots",
            json!({
                "name": "ci", "duration": -1, "level": "project",
                "permissions": [{"kind": "project", "namespace": "team", "access": [
                    {"resource": "repository", "action": "pull"},
                    {"resource": "repository", "action": "push"}]}]
            }),
        )
        .await;
    let name = created["name"].as_str().expect("a name").to_owned();
    let secret = created["secret"].as_str().expect("a secret").to_owned();
    assert_eq!(name, "robot$team+ci");
    let robot = Some((name.as_str(), secret.as_str()));
    let (_, token) = registry
        .token(robot, &["repository:team/app:pull,push,delete"])
        .await;
    assert_eq!(
        claims(&token)["access"][0]["actions"],
        json!(["pull", "push"])
    );
    assert_eq!(
        registry.push("team/app", "robot", &token).await,
        StatusCode::CREATED
    );
    let (_, token) = registry.token(robot, &["repository:open/app:push"]).await;
    assert_eq!(
        claims(&token)["access"],
        json!([]),
        "no push outside its project"
    );

    // Disabled: no token at all.
    let path = format!("/robots/{}", name.replace('$', "%24"));
    registry
        .admin(Method::PUT, &path, json!({"disable": true}))
        .await;
    let (status, _) = registry.token(robot, &["repository:team/app:pull"]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a disabled robot");
    registry
        .admin(Method::PUT, &path, json!({"disable": false}))
        .await;
    let (status, _) = registry.token(robot, &["repository:team/app:pull"]).await;
    assert_eq!(status, StatusCode::OK, "enabled again");

    // Expired: a robot created with a duration is refused once it has passed. The stored
    // expiry is moved into the past, as time would.
    let short = registry
        .admin(
            Method::POST,
            "/robots",
            json!({
                "name": "short", "duration": 1,
                "permissions": [{"kind": "project", "namespace": "team", "access": [
                    {"resource": "repository", "action": "pull"}]}]
            }),
        )
        .await;
    let short = (
        "robot$team+short",
        short["secret"].as_str().expect("a secret").to_owned(),
    );
    let (status, token) = registry
        .token(Some((short.0, &short.1)), &["repository:team/app:pull"])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(claims(&token)["exp"].as_u64().is_some());
    // Its tokens end with the account: one minute left, so the token lives one minute, not
    // the usual thirty.
    let mut record = registry
        .accounts
        .robot(short.0)
        .await
        .expect("the store answers")
        .expect("the robot");
    let ends = unix_now() + 60;
    record.expires_at = Some(ends);
    assert!(
        registry
            .accounts
            .update_robot(&record)
            .await
            .expect("updated")
    );
    let (_, token) = registry
        .token(Some((short.0, &short.1)), &["repository:team/app:pull"])
        .await;
    assert!(claims(&token)["exp"].as_u64().expect("exp") <= ends);
    // Then the expiry passes, as time would have it.
    record.expires_at = Some(unix_now() - 1);
    assert!(
        registry
            .accounts
            .update_robot(&record)
            .await
            .expect("updated")
    );
    let (status, _) = registry
        .token(Some((short.0, &short.1)), &["repository:team/app:pull"])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "an expired robot");

    let (_, listed) = registry
        .api(Method::GET, "/projects/team/robots", ADMIN, None)
        .await;
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
    assert!(
        listed.to_string().find("secret").is_none(),
        "secrets are never listed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_throttled_per_user_and_source() {
    let registry = populated().await;
    for _ in 0..5 {
        let (status, _) = registry.token(Some(("dev", "Wrong-password-1")), &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = registry.token(DEV, &[]).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password is refused while throttled"
    );
    let (status, _) = registry.token(GUEST, &[]).await;
    assert_eq!(status, StatusCode::OK, "other users are not affected");

    // Guesses sent all at once count each other: no more than five are ever checked.
    let guesses = (0..20).map(|i| {
        let password = format!("Wrong-guess-{i}");
        let registry = &registry;
        async move { registry.token(Some(("guest", &password)), &[]).await.0 }
    });
    let answers = futures_util::future::join_all(guesses).await;
    let checked = answers
        .iter()
        .filter(|status| **status == StatusCode::UNAUTHORIZED)
        .count();
    let throttled = answers
        .iter()
        .filter(|status| **status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(checked <= 5, "{checked} parallel guesses were checked");
    assert_eq!(checked + throttled, 20, "{answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_and_members_through_the_api() {
    let registry = populated().await;
    use reqwest::Method;
    // Anyone sees public projects; members see theirs.
    let (status, projects) = registry.api(Method::GET, "/projects", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let names = |projects: &Value| -> Vec<String> {
        projects
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(names(&projects), ["library", "open"]);
    let (_, projects) = registry.api(Method::GET, "/projects", DEV, None).await;
    assert_eq!(names(&projects), ["library", "open", "team"]);
    let (status, _) = registry
        .api(Method::GET, "/projects/team", OTHER, None)
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a private project is invisible to outsiders"
    );

    // A user creates a project and administers it.
    let (status, _) = registry
        .api(
            Method::POST,
            "/projects",
            OTHER,
            Some(json!({"project_name": "mine"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = registry
        .api(
            Method::POST,
            "/projects",
            OTHER,
            Some(json!({"project_name": "mine"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = registry
        .api(
            Method::POST,
            "/projects/mine/members",
            OTHER,
            Some(json!({"role_id": 3, "member_user": {"username": "dev"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, members) = registry
        .api(Method::GET, "/projects/mine/members", DEV, None)
        .await;
    assert_eq!(members.as_array().map(Vec::len), Some(2));
    let (status, _) = registry
        .api(
            Method::PUT,
            "/projects/mine/members/dev",
            OTHER,
            Some(json!({"role_id": 9})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no such role");

    // A project that holds repositories cannot be deleted; an empty one can.
    // `team-b/x` sorts before `team/app`: the check must still find `team/app`.
    registry
        .admin(Method::POST, "/projects", json!({"project_name": "team-b"}))
        .await;
    let (_, token) = registry
        .token(
            ADMIN,
            &[
                "repository:team/app:pull,push",
                "repository:team-b/x:pull,push",
            ],
        )
        .await;
    assert_eq!(
        registry.push("team-b/x", "v1", &token).await,
        StatusCode::CREATED
    );
    assert_eq!(
        registry.push("team/app", "v1", &token).await,
        StatusCode::CREATED
    );
    let (status, _) = registry
        .api(Method::DELETE, "/projects/team", ADMIN, None)
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    let (status, _) = registry
        .api(Method::DELETE, "/projects/mine", DEV, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a guest of the project");
    let (status, _) = registry
        .api(Method::DELETE, "/projects/mine", OTHER, None)
        .await;
    assert_eq!(status, StatusCode::OK);

    // Bad input gets a clear error.
    let (status, body) = registry
        .api(
            Method::POST,
            "/users",
            ADMIN,
            Some(json!({"username": "weak", "password": "short"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    let (status, _) = registry
        .api(
            Method::POST,
            "/projects",
            ADMIN,
            Some(json!({"project_name": "Bad Name"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_end_with_the_password_and_are_not_renewed() {
    let registry = populated().await;
    let post = |form: Vec<(&'static str, String)>| {
        let request = registry
            .client
            .post(registry.url("/service/token"))
            .form(&form);
        async move {
            let response = request.send().await.expect("the token endpoint answers");
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, first) = post(vec![
        ("grant_type", "password".into()),
        ("username", "dev".into()),
        ("password", "Developer-1".into()),
        ("service", SERVICE.into()),
        ("access_type", "offline".into()),
        ("client_id", "tests".into()),
    ])
    .await;
    assert_eq!(status, StatusCode::OK);
    let refresh = first["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_owned();
    let refresh_grant = || {
        vec![
            ("grant_type", "refresh_token".into()),
            ("refresh_token", refresh.clone()),
            ("service", SERVICE.into()),
            ("access_type", "offline".into()),
            ("scope", "repository:team/app:pull".into()),
        ]
    };
    let (status, renewed) = post(refresh_grant()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        claims(renewed["token"].as_str().expect("a token"))["sub"],
        "dev"
    );
    assert!(
        renewed["refresh_token"].is_null(),
        "a refresh grant does not renew: {renewed}"
    );

    // The password changes (a second later, so the change is after the token's issue).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _) = registry
        .api(
            reqwest::Method::PUT,
            "/users/dev/password",
            DEV,
            Some(json!({"old_password": "Developer-1", "new_password": "Developer-2"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = post(refresh_grant()).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "issued before the password changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_and_library_are_made_once_only() {
    let registry = populated().await;
    use reqwest::Method;
    registry
        .admin(
            Method::PUT,
            "/users/dev/sysadmin",
            json!({"sysadmin_flag": true}),
        )
        .await;
    let (status, _) = registry
        .api(Method::DELETE, "/users/admin", DEV, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let made = bootstrap(
        &*registry.accounts,
        &PasswordHasher::new(),
        Some(ADMIN_PASSWORD),
    )
    .await
    .expect("bootstrap runs");
    assert_eq!(made, None);
    assert!(
        registry
            .accounts
            .user("admin")
            .await
            .expect("read")
            .is_none(),
        "a deleted admin stays deleted"
    );
}

impl Registry {
    /// `dev` pushes `team/app:v1` and pulls it; `admin` deletes it. Returns its digest.
    async fn push_pull_delete(&self) -> String {
        use reqwest::Method;
        let (_, token) = self.token(DEV, &["repository:team/app:pull,push"]).await;
        assert_eq!(
            self.push("team/app", "v1", &token).await,
            StatusCode::CREATED
        );
        let manifest = "/v2/team/app/manifests/v1";
        let head = self.registry(Method::HEAD, manifest, &token, None).await;
        assert_eq!(head.status(), StatusCode::OK);
        let pulled = self.registry(Method::GET, manifest, &token, None).await;
        assert_eq!(pulled.status(), StatusCode::OK);
        let digest = pulled.headers()["docker-content-digest"]
            .to_str()
            .expect("a digest")
            .to_owned();
        let (_, admin_token) = self.token(ADMIN, &["repository:team/app:delete"]).await;
        let deleted = self
            .registry(
                Method::DELETE,
                &format!("/v2/team/app/manifests/{digest}"),
                &admin_token,
                None,
            )
            .await;
        assert_eq!(deleted.status(), StatusCode::ACCEPTED);
        digest
    }

    /// The events published since the last call.
    fn take_events(&self) -> Vec<Event> {
        self.events.take()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_is_published_once_with_its_actor() {
    let registry = populated().await;
    let setup = registry.take_events();
    let changes: Vec<_> = setup
        .iter()
        .map(|event| (event.actor.clone(), event.kind.clone()))
        .collect();
    let admin = Actor::User("admin".into());
    for (resource, name) in [
        (AccountResource::User, "dev"),
        (AccountResource::Project, "team"),
        (AccountResource::Member, "team/guest"),
    ] {
        let change = (
            admin.clone(),
            EventKind::AccountChanged {
                resource,
                operation: Operation::Create,
                name: name.into(),
            },
        );
        assert_eq!(
            changes.iter().filter(|c| **c == change).count(),
            1,
            "{change:?} in {changes:?}"
        );
    }
    assert!(
        setup
            .iter()
            .all(|event| event.entry == EntryPoint::Management
                && event.client == "127.0.0.1"
                && !event.request_id.is_empty()),
        "{setup:?}"
    );

    // A refused sign-in names the account, never the password.
    let (status, _) = registry.token(Some(("dev", "Wrong-password-1")), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let refused = registry.take_events();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(
        refused[0].kind,
        EventKind::LoginFailed {
            username: "dev".into()
        }
    );
    assert_eq!(refused[0].actor, Actor::Anonymous);
    assert_eq!(refused[0].entry, EntryPoint::Token);
    assert!(!format!("{refused:?}").contains("Wrong-password"));

    // A push, a pull and a delete, each by whoever did it, once each.
    let digest = registry.push_pull_delete().await;
    let dev = Actor::User("dev".into());

    let events = registry.take_events();
    let kinds: Vec<&str> = events
        .iter()
        .map(|event| berth_app::event_log::describe(&event.kind).0)
        .collect();
    assert_eq!(
        kinds,
        [
            "login_succeeded",
            "blob_pushed",
            "manifest_pushed",
            "manifest_pulled",
            "login_succeeded",
            "manifest_deleted"
        ],
        "a HEAD is no pull: {events:?}"
    );
    let actors: Vec<&Actor> = events.iter().map(|event| &event.actor).collect();
    assert_eq!(actors, [&dev, &dev, &dev, &dev, &admin, &admin]);
    match &events[2].kind {
        EventKind::ManifestPushed {
            repository, tag, ..
        } => {
            assert_eq!(repository.as_str(), "team/app");
            assert_eq!(tag.as_ref().map(|t| t.as_str()), Some("v1"));
        }
        other => panic!("not a push: {other:?}"),
    }
    match &events[3].kind {
        EventKind::ManifestPulled { digest: pulled, .. } => assert_eq!(pulled.as_str(), digest),
        other => panic!("not a pull: {other:?}"),
    }
    let mut ids: Vec<&str> = events.iter().map(|e| e.request_id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "one request each: {events:?}");
    assert!(
        events[1..4]
            .iter()
            .all(|event| event.entry == EntryPoint::Registry)
    );
}

/// The audit log's entries `path` answers as `credentials`, once `count` are there (the log
/// is written in the background).
async fn audit_entries(
    registry: &Registry,
    path: &str,
    credentials: Option<(&str, &str)>,
    count: usize,
) -> (StatusCode, Vec<Value>) {
    for _ in 0..100 {
        let (status, answer) = registry
            .api(reqwest::Method::GET, path, credentials, None)
            .await;
        let entries = answer.as_array().cloned().unwrap_or_default();
        if status != StatusCode::OK || entries.len() >= count {
            return (status, entries);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path}: fewer than {count} entries after 5 s");
}

fn field<'a>(entries: &'a [Value], name: &str) -> Vec<&'a str> {
    entries
        .iter()
        .map(|entry| entry[name].as_str().unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_holds_each_operation_under_its_user() {
    use reqwest::Method;
    let registry = populated().await;
    let (status, _) = registry.token(Some(("dev", "Wrong-password-7")), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let digest = registry.push_pull_delete().await;

    // The artifact's push, pull and delete, newest first, each under who did it.
    let (status, artifacts) = audit_entries(
        &registry,
        "/audit-logs?q=resource_type%3Dartifact",
        ADMIN,
        3,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(field(&artifacts, "operation"), ["delete", "pull", "create"]);
    assert_eq!(field(&artifacts, "username"), ["admin", "dev", "dev"]);
    assert_eq!(
        field(&artifacts, "resource"),
        [
            format!("team/app@{digest}").as_str(),
            &format!("team/app@{digest}"),
            "team/app:v1"
        ]
    );
    assert!(
        artifacts.iter().all(|entry| entry["id"].is_u64()
            && entry["op_time"].as_str().is_some_and(|t| t.ends_with('Z')))
    );

    // The refused sign-in, without the password.
    let (_, failed) = audit_entries(
        &registry,
        "/audit-logs?q=operation%3Dlogin_failed",
        ADMIN,
        1,
    )
    .await;
    assert_eq!(field(&failed, "resource"), ["dev"]);
    assert_eq!(field(&failed, "username"), ["anonymous"]);
    let everything = registry
        .api(Method::GET, "/audit-logs?page_size=100", ADMIN, None)
        .await
        .1;
    assert!(!everything.to_string().contains("Wrong-password"));

    // Filters and pages.
    let (_, dev_pulls) = audit_entries(
        &registry,
        "/audit-logs?q=username%3Ddev%2Coperation%3Dpull&sort=op_time",
        ADMIN,
        1,
    )
    .await;
    assert_eq!(dev_pulls.len(), 1);
    let response = registry
        .client
        .get(registry.url("/api/v2.0/audit-logs?page=2&page_size=2"))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .await
        .expect("an answer");
    let total: usize = response.headers()["x-total-count"]
        .to_str()
        .expect("a count")
        .parse()
        .expect("a number");
    let link = response.headers()["link"]
        .to_str()
        .expect("links")
        .to_owned();
    assert!(total > 4, "{total}");
    assert!(link.contains("page=1&page_size=2>; rel=\"prev\""), "{link}");
    assert!(link.contains("page=3&page_size=2>; rel=\"next\""), "{link}");
    let second: Value = response.json().await.expect("JSON");
    assert_eq!(second.as_array().map(Vec::len), Some(2));

    // Who sees what: system admins everything, project admins their project's entries,
    // others nothing.
    let (status, _) = registry.api(Method::GET, "/audit-logs", DEV, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = registry
        .api(Method::GET, "/projects/team/logs", DEV, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    registry
        .admin(
            Method::PUT,
            "/projects/team/members/dev",
            json!({"role_id": 1}),
        )
        .await;
    let (status, team) =
        audit_entries(&registry, "/projects/team/logs?page_size=100", DEV, 3).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        team.iter().all(|entry| entry["resource"]
            .as_str()
            .is_some_and(|r| r.starts_with("team"))),
        "{team:?}"
    );
    let (status, _) = registry
        .api(Method::GET, "/projects/open/logs", DEV, None)
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "dev is a developer in open, not its admin"
    );
}

/// `path` as `credentials` once `ready` holds of its answer (statistics are counted in the
/// background).
async fn once(
    registry: &Registry,
    path: &str,
    credentials: Option<(&str, &str)>,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let mut answer = Value::Null;
    for _ in 0..100 {
        let (status, body) = registry
            .api(reqwest::Method::GET, path, credentials, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        answer = body;
        if ready(&answer) {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path}: still {answer} after 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_count_a_known_sequence_of_pushes_and_pulls() {
    use reqwest::Method;
    let registry = populated().await;
    let (_, token) = registry
        .token(
            DEV,
            &[
                "repository:team/app:pull,push",
                "repository:open/tool:pull,push",
            ],
        )
        .await;
    assert_eq!(
        registry.push("team/app", "v1", &token).await,
        StatusCode::CREATED
    );
    assert_eq!(
        registry.push("open/tool", "v1", &token).await,
        StatusCode::CREATED
    );
    for (repository, pulls) in [("team/app", 3), ("open/tool", 1)] {
        for _ in 0..pulls {
            let path = format!("/v2/{repository}/manifests/v1");
            let pulled = registry.registry(Method::GET, &path, &token, None).await;
            assert_eq!(pulled.status(), StatusCode::OK);
        }
    }
    // A HEAD is no pull.
    let head = registry
        .registry(Method::HEAD, "/v2/team/app/manifests/v1", &token, None)
        .await;
    assert_eq!(head.status(), StatusCode::OK);

    let app = once(
        &registry,
        "/projects/team/repositories/app",
        DEV,
        |answer| answer["pull_count"] == 3,
    )
    .await;
    assert_eq!(app["name"], "team/app");
    assert!(
        app["pull_time"].is_string() && app["update_time"].is_string(),
        "{app}"
    );
    let artifact = once(
        &registry,
        "/projects/open/repositories/tool/artifacts/v1",
        None,
        |answer| answer["pull_count"] == 1,
    )
    .await;
    assert!(
        artifact["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
    assert!(artifact["push_time"].is_string(), "{artifact}");
    let (status, _) = registry
        .api(Method::GET, "/projects/team/repositories/app", None, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a private project is hidden");

    let pulls = once(&registry, "/statistics/pulls?top=5", ADMIN, |answer| {
        answer["most_pulled"][1]["pull_count"] == 1
    })
    .await;
    assert_eq!(
        pulls["most_pulled"],
        json!([
            {"repository_name": "team/app", "pull_count": 3},
            {"repository_name": "open/tool", "pull_count": 1},
        ])
    );
    let daily = pulls["daily_pulls"].as_array().expect("days");
    assert_eq!(daily.len(), 30);
    assert_eq!(daily[29]["pull_count"], 4, "{daily:?}");
    assert!(daily[..29].iter().all(|day| day["pull_count"] == 0));
    let (status, _) = registry
        .api(Method::GET, "/statistics/pulls", DEV, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Project and repository counts, as each caller sees them.
    let (status, all) = registry.api(Method::GET, "/statistics", ADMIN, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all["private_repo_count"], 1, "{all}");
    assert_eq!(all["public_repo_count"], 1, "{all}");
    assert_eq!(all["total_repo_count"], 2, "{all}");
    let (_, anonymous) = registry.api(Method::GET, "/statistics", None, None).await;
    assert_eq!(anonymous["private_project_count"], 0, "{anonymous}");
    assert_eq!(anonymous["private_repo_count"], 0, "{anonymous}");
    assert_eq!(anonymous["public_repo_count"], 1, "{anonymous}");
    assert_eq!(
        anonymous["public_project_count"], all["public_project_count"],
        "public projects are everyone's: {anonymous} {all}"
    );
}

/// A mount without `from` takes the blob from a repository the token may pull from (the
/// target itself, or another it names), and is a plain upload session otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_without_from_finds_the_blob_where_the_token_may_pull() {
    use reqwest::Method;
    let registry = populated().await;
    let blob = b"a layer only team/app holds".to_vec();
    let digest = sha256(&blob);
    let (_, push) = registry
        .token(DEV, &["repository:team/app:pull,push"])
        .await;
    let uploaded = registry
        .registry(
            Method::POST,
            &format!("/v2/team/app/blobs/uploads/?digest={digest}"),
            &push,
            Some(("application/octet-stream", blob)),
        )
        .await;
    assert_eq!(uploaded.status(), StatusCode::CREATED);
    let mount = |token: String, target: &'static str| {
        let registry = &registry;
        let digest = digest.clone();
        async move {
            registry
                .registry(
                    Method::POST,
                    &format!("/v2/{target}/blobs/uploads/?mount={digest}"),
                    &token,
                    None,
                )
                .await
        }
    };

    let (_, target_only) = registry
        .token(DEV, &["repository:open/tool:pull,push"])
        .await;
    let refused = mount(target_only, "open/tool").await;
    assert_eq!(
        refused.status(),
        StatusCode::ACCEPTED,
        "a token naming no repository that holds the blob: an upload session"
    );
    let (_, both) = registry
        .token(
            DEV,
            &["repository:open/tool:pull,push", "repository:team/app:pull"],
        )
        .await;
    let mounted = mount(both.clone(), "open/tool").await;
    assert_eq!(mounted.status(), StatusCode::CREATED, "found in team/app");
    assert_eq!(
        mounted
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok()),
        Some(format!("/v2/open/tool/blobs/{digest}").as_str())
    );
    let head = registry
        .registry(
            Method::HEAD,
            &format!("/v2/open/tool/blobs/{digest}"),
            &both,
            None,
        )
        .await;
    assert_eq!(head.status(), StatusCode::OK, "linked into open/tool");
    let again = mount(both, "open/tool").await;
    assert_eq!(
        again.status(),
        StatusCode::CREATED,
        "the target holds it now"
    );
}
