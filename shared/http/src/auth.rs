//! Token auth on the registry endpoints: every request but none carries a bearer token from
//! the token service, and the token must grant what [`Endpoint::required_access`] names.
//!
//! The check reads nothing but the request and the verification keys: no store is
//! consulted, so it costs one signature verification per request (see the `token` bench of
//! `berth-auth`). A request without a usable token is answered `401 UNAUTHORIZED` with a
//! `WWW-Authenticate: Bearer` challenge naming the realm, the service and the scope to ask
//! for, which is how docker, podman and containerd find the token service.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use berth_auth::challenge::{ChallengeError, bearer_challenge};
use berth_auth::{ActionSet, KeyRing, Scope, TokenVerifier, VerifyError, unix_now};
use berth_core::{ErrorCode, ErrorHint, RegistryError, Result};
use http::HeaderMap;
use http::header::{AUTHORIZATION, HOST};

use crate::endpoint::{Access, Action, Endpoint, UploadKind};

const FORWARDED_PROTO: &str = "x-forwarded-proto";

/// The shortest time between two loads of the keys from a [`KeySource`]: a token naming an
/// unknown key costs at most one load per interval, whoever sends it.
pub const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

/// The longest a process uses keys from a [`KeySource`] before loading them again, so that a
/// key dropped from the source (revoked) stops verifying, and a new signing key starts
/// signing, within this time.
pub const KEY_MAX_AGE: Duration = Duration::from_secs(300);

/// When keys that came from a source are due to be loaded again: after [`KEY_MAX_AGE`], or
/// when a token names a key they lack, at most once per [`KEY_RELOAD_INTERVAL`] (the first
/// time at once: a key rotated just before a cold start is not refused for the interval).
#[derive(Debug)]
pub struct KeyRefresh {
    times: std::sync::Mutex<LoadTimes>,
    /// Held while loading: one caller loads.
    loading: tokio::sync::Mutex<()>,
}

#[derive(Debug, Clone, Copy)]
struct LoadTimes {
    loaded_at: Instant,
    /// The last load for a key the keys lacked.
    unknown_key_at: Option<Instant>,
}

impl Default for KeyRefresh {
    /// Keys just loaded.
    fn default() -> Self {
        Self {
            times: std::sync::Mutex::new(LoadTimes {
                loaded_at: Instant::now(),
                unknown_key_at: None,
            }),
            loading: tokio::sync::Mutex::new(()),
        }
    }
}

impl KeyRefresh {
    fn times(&self) -> std::sync::MutexGuard<'_, LoadTimes> {
        self.times.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn due(&self, unknown_key: bool) -> bool {
        let times = *self.times();
        times.loaded_at.elapsed() >= KEY_MAX_AGE
            || (unknown_key
                && times
                    .unknown_key_at
                    .is_none_or(|at| at.elapsed() >= KEY_RELOAD_INTERVAL))
    }

    /// Runs `load` if the keys are due (see the type). For an unknown key the caller waits
    /// for a load under way, so it sees its result; otherwise it goes on with the keys it
    /// has while another caller loads.
    pub async fn run_if_due<F, Fut>(&self, unknown_key: bool, load: F)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        if !self.due(unknown_key) {
            return;
        }
        let _loading = if unknown_key {
            self.loading.lock().await
        } else {
            match self.loading.try_lock() {
                Ok(guard) => guard,
                Err(_) => return,
            }
        };
        // Another caller may have loaded them while this one waited.
        if !self.due(unknown_key) {
            return;
        }
        {
            let mut times = self.times();
            times.loaded_at = Instant::now();
            if unknown_key {
                times.unknown_key_at = Some(times.loaded_at);
            }
        }
        load().await;
    }
}

/// Where the verification keys come from when they can change while the process runs (a
/// key rotated in AWS Systems Manager while a Lambda function stays warm).
#[async_trait]
pub trait KeySource: Send + Sync + std::fmt::Debug {
    /// The keys as they are now.
    async fn load(&self) -> Result<KeyRing>;
}

/// How a verifier is rebuilt from reloaded keys.
#[derive(Debug)]
struct KeyReload {
    source: Arc<dyn KeySource>,
    issuer: String,
    cache: usize,
    refresh: KeyRefresh,
}

/// Where a registry sends clients for tokens, and how it checks the tokens they bring.
#[derive(Debug)]
pub struct RegistryAuth {
    verifier: RwLock<Arc<TokenVerifier>>,
    reload: Option<KeyReload>,
    service: String,
    realm: Option<String>,
}

impl RegistryAuth {
    /// `service` is the name tokens are issued for (their `aud`). `realm` is the token
    /// service's absolute URL; `None` derives it from each request (`Host`, and
    /// `X-Forwarded-Proto` as a load balancer or API Gateway sets it) as
    /// `<scheme>://<host>/service/token`.
    pub fn new(verifier: TokenVerifier, service: impl Into<String>, realm: Option<String>) -> Self {
        Self {
            verifier: RwLock::new(Arc::new(verifier)),
            reload: None,
            service: service.into(),
            realm,
        }
    }

    /// Reloads the keys from `source` (just loaded from it) when a token names a key the
    /// verifier does not know (at most once per [`KEY_RELOAD_INTERVAL`]), so that tokens
    /// signed with a newly rotated key are accepted without a restart, and every
    /// [`KEY_MAX_AGE`], so that a key dropped from the source stops verifying. The new
    /// verifier checks tokens of `issuer` and remembers up to `cache` verified tokens.
    #[must_use]
    pub fn with_key_source(
        mut self,
        source: Arc<dyn KeySource>,
        issuer: impl Into<String>,
        cache: usize,
    ) -> Self {
        self.reload = Some(KeyReload {
            source,
            issuer: issuer.into(),
            cache,
            refresh: KeyRefresh::default(),
        });
        self
    }

    fn verifier(&self) -> Arc<TokenVerifier> {
        self.verifier
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// With a [`KeySource`]: loads the keys again when they are due (see
    /// [`RegistryAuth::with_key_source`]). Called before [`RegistryAuth::authorize`]; a failed
    /// load is logged and leaves the keys as they were.
    pub(crate) async fn refresh_keys_for(&self, headers: &HeaderMap) {
        let Some(reload) = &self.reload else {
            return;
        };
        let unknown_key = bearer_token(headers)
            .is_some_and(|token| self.verifier().knows_key_of(token) == Some(false));
        reload
            .refresh
            .run_if_due(unknown_key, || async {
                match reload.source.load().await {
                    Ok(ring) => {
                        let verifier = TokenVerifier::new(&reload.issuer, &self.service, &ring)
                            .with_cache(reload.cache);
                        *self.verifier.write().unwrap_or_else(PoisonError::into_inner) =
                            Arc::new(verifier);
                        tracing::info!(
                            current_kid = ring.current_kid(),
                            unknown_key,
                            "reloaded the token verification keys"
                        );
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "could not reload the token verification keys");
                    }
                }
            })
            .await;
    }

    /// Checks the request's token against what `endpoint` needs. A cross-repository mount
    /// whose token does not grant pull on the source is turned into a plain upload session,
    /// as the distribution specification allows, rather than refused. Returns the account
    /// the token was issued to (empty for anonymous).
    pub(crate) fn authorize(&self, endpoint: &mut Endpoint, headers: &HeaderMap) -> Result<String> {
        let access = endpoint.required_access();
        let scopes = scopes_of(&access);
        let Some(token) = bearer_token(headers) else {
            return Err(self.refuse(headers, &scopes, None, "authentication required"));
        };
        let claims = self.verifier().verify(token, unix_now()).map_err(|error| {
            let message = match error {
                VerifyError::Expired => "the token has expired",
                _ => "the token is not valid for this registry",
            };
            self.refuse(
                headers,
                &scopes,
                Some(ChallengeError::InvalidToken),
                message,
            )
        })?;
        let missing = match &access {
            Access::Public => None,
            Access::Catalog => (!claims.allows_catalog()).then(|| "the catalog".to_owned()),
            Access::Repository { name, actions } => actions
                .iter()
                .find(|action| !claims.allows_repository(name, **action))
                .map(|action| format!("{action} on {name}")),
            Access::Mount { name, from } => {
                let missing = [Action::Pull, Action::Push]
                    .into_iter()
                    .find(|action| !claims.allows_repository(name, *action))
                    .map(|action| format!("{action} on {name}"));
                if missing.is_none() && !claims.allows_repository(from, Action::Pull) {
                    unmount(endpoint);
                }
                missing
            }
            Access::Discover { name } => {
                let missing = [Action::Pull, Action::Push]
                    .into_iter()
                    .find(|action| !claims.allows_repository(name, *action))
                    .map(|action| format!("{action} on {name}"));
                if missing.is_none() {
                    discover_in(endpoint, &claims);
                }
                missing
            }
        };
        match missing {
            None => Ok(claims.sub.clone()),
            Some(what) => Err(self.refuse(
                headers,
                &scopes,
                Some(ChallengeError::InsufficientScope),
                &format!("access denied: the token does not grant {what}"),
            )),
        }
    }

    fn refuse(
        &self,
        headers: &HeaderMap,
        scopes: &[Scope],
        error: Option<ChallengeError>,
        message: &str,
    ) -> RegistryError {
        let realm = match &self.realm {
            Some(realm) => realm.clone(),
            None => request_realm(headers),
        };
        RegistryError::new(ErrorCode::Unauthorized, message.to_owned()).with_hint(
            ErrorHint::Challenge(bearer_challenge(&realm, &self.service, scopes, error)),
        )
    }
}

/// The scopes a client should ask for to be allowed `access`.
fn scopes_of(access: &Access) -> Vec<Scope> {
    match access {
        Access::Public => Vec::new(),
        Access::Catalog => vec![Scope::Catalog],
        Access::Repository { name, actions } => {
            vec![Scope::repository(
                name.clone(),
                actions.iter().copied().collect::<ActionSet>(),
            )]
        }
        Access::Mount { name, from } => vec![
            Scope::repository(name.clone(), [Action::Pull, Action::Push]),
            Scope::repository(from.clone(), [Action::Pull]),
        ],
        Access::Discover { name } => vec![Scope::repository(
            name.clone(),
            [Action::Pull, Action::Push],
        )],
    }
}

/// The repositories a mount without `from` may take the blob from: those the token grants
/// pull on by name.
fn discover_in(endpoint: &mut Endpoint, claims: &berth_auth::Claims) {
    if let Endpoint::StartUpload {
        start: UploadKind::Mount { discover, .. },
        ..
    } = endpoint
    {
        *discover = claims
            .access
            .iter()
            .filter(|entry| entry.resource_type == "repository")
            .filter_map(|entry| entry.name.parse::<berth_core::RepositoryName>().ok())
            .filter(|name| claims.allows_repository(name, Action::Pull))
            .collect();
    }
}

/// Drops the source of a mount, which opens an upload session instead.
fn unmount(endpoint: &mut Endpoint) {
    if let Endpoint::StartUpload {
        start: UploadKind::Mount { from, .. },
        ..
    } = endpoint
    {
        *from = None;
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// `<scheme>://<host>/service/token` for the host the client addressed.
pub(crate) fn request_realm(headers: &HeaderMap) -> String {
    let host = headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|host| !host.is_empty() && host.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or("localhost");
    let scheme = match headers.get(FORWARDED_PROTO).and_then(|v| v.to_str().ok()) {
        Some(proto) if proto.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}/service/token")
}

#[cfg(test)]
mod tests {
    use berth_auth::{KeyRing, ResourceAccess, TokenIssuer, generate_es256_pem};
    use berth_core::RepositoryName;
    use http::HeaderValue;

    use super::*;

    fn setup() -> (TokenIssuer, RegistryAuth) {
        let pem = generate_es256_pem().expect("a key");
        let ring = KeyRing::from_pems(&[pem]).expect("a ring");
        let issuer = TokenIssuer::new("berth", "registry", &ring).expect("an issuer");
        let auth = RegistryAuth::new(
            TokenVerifier::new("berth", "registry", &ring),
            "registry",
            None,
        );
        (issuer, auth)
    }

    fn name(text: &str) -> RepositoryName {
        text.parse().expect("a name")
    }

    fn headers(token: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("registry.test:5000"));
        if let Some(token) = token {
            headers.insert(
                AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {token}")).expect("a header"),
            );
        }
        headers
    }

    fn endpoint(method: http::Method, path: &str, query: Option<&str>) -> Endpoint {
        Endpoint::parse(&method, path, query).expect("an endpoint")
    }

    fn challenge(error: &RegistryError) -> &str {
        match error.hint() {
            Some(ErrorHint::Challenge(challenge)) => challenge,
            other => panic!("no challenge: {other:?}"),
        }
    }

    #[test]
    fn no_token_is_challenged_with_the_scope_to_ask_for() {
        let (_, auth) = setup();
        let mut pull = endpoint(http::Method::GET, "/v2/team/app/manifests/v1", None);
        let error = auth
            .authorize(&mut pull, &headers(None))
            .expect_err("no token");
        assert_eq!(error.code(), ErrorCode::Unauthorized);
        assert_eq!(
            challenge(&error),
            "Bearer realm=\"http://registry.test:5000/service/token\",service=\"registry\",\
             scope=\"repository:team/app:pull\""
        );
        let mut version = endpoint(http::Method::GET, "/v2/", None);
        let error = auth
            .authorize(&mut version, &headers(None))
            .expect_err("even the version check needs a token");
        assert!(
            !challenge(&error).contains("scope="),
            "{}",
            challenge(&error)
        );
    }

    #[test]
    fn a_token_grants_exactly_its_access() {
        let (issuer, auth) = setup();
        let token = issuer
            .issue(
                "alice",
                vec![ResourceAccess::repository(
                    &name("team/app"),
                    [Action::Pull],
                )],
                unix_now(),
                None,
            )
            .expect("a token")
            .token;
        let mut pull = endpoint(http::Method::GET, "/v2/team/app/manifests/v1", None);
        auth.authorize(&mut pull, &headers(Some(&token)))
            .expect("pull is granted");
        let mut version = endpoint(http::Method::GET, "/v2/", None);
        auth.authorize(&mut version, &headers(Some(&token)))
            .expect("any valid token may ask for the version");

        let mut push = endpoint(http::Method::POST, "/v2/team/app/blobs/uploads/", None);
        let error = auth
            .authorize(&mut push, &headers(Some(&token)))
            .expect_err("push is not granted");
        assert!(challenge(&error).ends_with(",error=\"insufficient_scope\""));
        assert!(
            error.message().contains("push on team/app"),
            "{}",
            error.message()
        );

        let mut other = endpoint(http::Method::GET, "/v2/team/other/tags/list", None);
        auth.authorize(&mut other, &headers(Some(&token)))
            .expect_err("another repository");
        let mut catalog = endpoint(http::Method::GET, "/v2/_catalog", None);
        auth.authorize(&mut catalog, &headers(Some(&token)))
            .expect_err("the catalog");
    }

    #[test]
    fn a_bad_token_is_an_invalid_token() {
        let (_, auth) = setup();
        let (other_issuer, _) = setup();
        let foreign = other_issuer
            .issue("alice", Vec::new(), unix_now(), None)
            .expect("a token")
            .token;
        for token in [foreign.as_str(), "not-a-jwt"] {
            let mut version = endpoint(http::Method::GET, "/v2/", None);
            let error = auth
                .authorize(&mut version, &headers(Some(token)))
                .expect_err("refused");
            assert!(challenge(&error).ends_with(",error=\"invalid_token\""));
        }
    }

    #[test]
    fn a_mount_without_pull_on_the_source_becomes_a_session() {
        let (issuer, auth) = setup();
        let digest = "sha256:".to_owned() + &"a".repeat(64);
        let query = format!("mount={digest}&from=other/base");
        let token = issuer
            .issue(
                "alice",
                vec![ResourceAccess::repository(
                    &name("team/app"),
                    [Action::Pull, Action::Push],
                )],
                unix_now(),
                None,
            )
            .expect("a token")
            .token;
        let mut mount = endpoint(
            http::Method::POST,
            "/v2/team/app/blobs/uploads/",
            Some(&query),
        );
        auth.authorize(&mut mount, &headers(Some(&token)))
            .expect("push on the target is enough");
        assert!(
            matches!(
                mount,
                Endpoint::StartUpload {
                    start: UploadKind::Mount { from: None, .. },
                    ..
                }
            ),
            "{mount:?}"
        );
    }

    /// Keys as a store would hold them: replaced by a rotation, counted when loaded.
    #[derive(Debug, Default)]
    struct RotatingKeys {
        pems: std::sync::Mutex<Vec<String>>,
        loads: std::sync::atomic::AtomicUsize,
    }

    #[async_trait]
    impl KeySource for RotatingKeys {
        async fn load(&self) -> Result<KeyRing> {
            self.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            KeyRing::from_pems(&self.pems.lock().expect("the keys"))
                .map_err(|e| RegistryError::internal(e.to_string()))
        }
    }

    #[tokio::test]
    async fn a_token_signed_by_a_rotated_key_reloads_the_keys_once() {
        let old = generate_es256_pem().expect("a key");
        let new = generate_es256_pem().expect("a key");
        let old_ring = KeyRing::from_pems(&[&old]).expect("a ring");
        let keys = Arc::new(RotatingKeys::default());
        *keys.pems.lock().expect("the keys") = vec![old.clone()];
        let auth = RegistryAuth::new(
            TokenVerifier::new("berth", "registry", &old_ring),
            "registry",
            None,
        )
        .with_key_source(keys.clone(), "berth", 16);
        let loads = || keys.loads.load(std::sync::atomic::Ordering::SeqCst);

        // Known keys never cause a load.
        let by_old = TokenIssuer::new("berth", "registry", &old_ring)
            .expect("an issuer")
            .issue("alice", Vec::new(), unix_now(), None)
            .expect("a token")
            .token;
        auth.refresh_keys_for(&headers(Some(&by_old))).await;
        auth.refresh_keys_for(&headers(Some("not-a-jwt"))).await;
        auth.refresh_keys_for(&headers(None)).await;
        assert_eq!(loads(), 0);

        // The rotation: the new key signs, the old one still verifies, at once.
        *keys.pems.lock().expect("the keys") = vec![new.clone(), old.clone()];
        let new_ring = KeyRing::from_pems(&[&new, &old]).expect("a ring");
        let by_new = TokenIssuer::new("berth", "registry", &new_ring)
            .expect("an issuer")
            .issue("alice", Vec::new(), unix_now(), None)
            .expect("a token")
            .token;
        let mut version = endpoint(http::Method::GET, "/v2/", None);
        auth.authorize(&mut version, &headers(Some(&by_new)))
            .expect_err("the new key is not known yet");
        auth.refresh_keys_for(&headers(Some(&by_new))).await;
        assert_eq!(loads(), 1);
        auth.authorize(&mut version, &headers(Some(&by_new)))
            .expect("the new key verifies after the reload");
        auth.authorize(&mut version, &headers(Some(&by_old)))
            .expect("the old key still verifies");

        // A key nobody has: one load was just made, so no other until the interval passed.
        let (stranger, _) = setup();
        let foreign = stranger
            .issue("mallory", Vec::new(), unix_now(), None)
            .expect("a token")
            .token;
        auth.refresh_keys_for(&headers(Some(&foreign))).await;
        auth.refresh_keys_for(&headers(Some(&foreign))).await;
        assert_eq!(loads(), 1, "unknown keys reload at most once per interval");
        auth.authorize(&mut version, &headers(Some(&foreign)))
            .expect_err("a stranger's key");

        // Revocation: the old key dropped from the source stops verifying once the keys are
        // older than the maximum age, whatever token comes.
        *keys.pems.lock().expect("the keys") = vec![new.clone()];
        auth.refresh_keys_for(&headers(Some(&by_new))).await;
        assert_eq!(loads(), 1, "known keys are kept until the maximum age");
        auth.reload
            .as_ref()
            .expect("a source")
            .refresh
            .set_age(KEY_MAX_AGE);
        auth.refresh_keys_for(&headers(Some(&by_new))).await;
        assert_eq!(loads(), 2);
        auth.authorize(&mut version, &headers(Some(&by_old)))
            .expect_err("the revoked key no longer verifies");
        auth.authorize(&mut version, &headers(Some(&by_new)))
            .expect("the current key verifies");
    }

    impl KeyRefresh {
        /// Makes the keys look `age` old.
        fn set_age(&self, age: Duration) {
            self.times().loaded_at = Instant::now() - age;
        }
    }

    #[test]
    fn the_realm_follows_the_forwarded_scheme() {
        let mut headers = headers(None);
        assert_eq!(
            request_realm(&headers),
            "http://registry.test:5000/service/token"
        );
        headers.insert(FORWARDED_PROTO, HeaderValue::from_static("https"));
        assert_eq!(
            request_realm(&headers),
            "https://registry.test:5000/service/token"
        );
    }
}
