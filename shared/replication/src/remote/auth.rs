//! Authentication with a remote registry: its `WWW-Authenticate` challenges, the scopes
//! each request needs, and bearer tokens from its token service, cached per scope set.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use berth_core::RepositoryName;
use http::header::WWW_AUTHENTICATE;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use reqwest::Url;
use serde::Deserialize;

use super::error::{RemoteError, host_of, summary, transport_error};
use super::response::{read_body, take_token, take_value};
use super::{REQUEST_TIMEOUT, RemoteRegistry, lock};

/// The largest token answer read.
const MAX_TOKEN_BYTES: usize = 1024 * 1024;
/// A token's lifetime when its answer does not say (the token specification's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// The most a cached token is renewed before it expires, so it cannot expire in flight.
const TOKEN_RENEWAL_MARGIN: Duration = Duration::from_secs(30);

/// What this client learnt from the registry's challenges. Remembering the scheme lets
/// later requests carry authorization from the start, which a streamed body needs.
#[derive(Default)]
pub(super) struct AuthState {
    scheme: Option<Scheme>,
    /// Tokens by scope set (see [`scope_key`]).
    pub(super) tokens: HashMap<String, CachedToken>,
}

#[derive(Clone)]
enum Scheme {
    Basic,
    Bearer { realm: Url, service: Option<String> },
}

impl AuthState {
    /// Caches a token, dropping expired ones so a long-running process replicating many
    /// repositories does not keep one per repository forever.
    fn store(&mut self, key: String, token: CachedToken) {
        let now = Instant::now();
        self.tokens.retain(|_, cached| cached.renew_at > now);
        self.tokens.insert(key, token);
    }
}

pub(super) struct CachedToken {
    /// The whole `Authorization` value, marked sensitive.
    header: HeaderValue,
    renew_at: Instant,
}

/// The token endpoint's answer; registries use either name for the token.
#[derive(Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    /// Seconds; some services write it as a decimal.
    expires_in: Option<f64>,
}

pub(super) fn pull_scopes(repo: &RepositoryName) -> Vec<String> {
    vec![format!("repository:{repo}:pull")]
}

pub(super) fn push_scopes(repo: &RepositoryName) -> Vec<String> {
    vec![format!("repository:{repo}:pull,push")]
}

/// Deleting needs `delete` in Distribution and Berth; pull and push come along so that one
/// token serves the whole replication of a repository.
pub(super) fn delete_scopes(repo: &RepositoryName) -> Vec<String> {
    vec![format!("repository:{repo}:delete,pull,push")]
}

pub(super) const CATALOG_SCOPE: &str = "registry:catalog:*";

/// The cache key of a scope set: order and repetition do not matter.
pub(super) fn scope_key(scopes: &[String]) -> String {
    let mut sorted: Vec<&str> = scopes.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.join(" ")
}

/// The scopes a token is asked for: ours, and whatever else the challenge named (a registry
/// may want more than we guessed, e.g. `*` to delete).
fn merge_scopes(ours: &[String], challenged: &[String]) -> Vec<String> {
    let mut all = ours.to_vec();
    for scope in challenged {
        if !all.contains(scope) {
            all.push(scope.clone());
        }
    }
    all
}

impl RemoteRegistry {
    /// The `Authorization` for a request needing `scopes`, from what the registry asked
    /// for before: Basic credentials, or a bearer token (fetched now if none is cached).
    pub(super) async fn authorization(
        &self,
        scopes: &[String],
    ) -> Result<Option<HeaderValue>, RemoteError> {
        let key = scope_key(scopes);
        let scheme = {
            let state = lock(&self.inner.auth);
            if let Some(token) = state.tokens.get(&key)
                && token.renew_at > Instant::now()
            {
                return Ok(Some(token.header.clone()));
            }
            state.scheme.clone()
        };
        match scheme {
            None => Ok(None),
            Some(Scheme::Basic) => Ok(self.basic_header()),
            Some(Scheme::Bearer { realm, service }) => {
                let token = self.fetch_token(&realm, service.as_deref(), scopes).await?;
                let header = token.header.clone();
                lock(&self.inner.auth).store(key, token);
                Ok(Some(header))
            }
        }
    }

    /// Takes in a challenge. Returns whether sending the request again may now work:
    /// `false` when Basic credentials are missing or were just refused. For a bearer
    /// challenge, fetches a fresh token for our scopes and the challenge's.
    pub(super) async fn learn(
        &self,
        challenge: &Challenge,
        scopes: &[String],
        authorized: bool,
    ) -> Result<bool, RemoteError> {
        match challenge {
            Challenge::Basic => {
                if self.inner.credential.is_none() {
                    return Ok(false);
                }
                let mut state = lock(&self.inner.auth);
                let retried = authorized && matches!(state.scheme, Some(Scheme::Basic));
                state.scheme = Some(Scheme::Basic);
                Ok(!retried)
            }
            Challenge::Bearer {
                realm,
                service,
                scopes: challenged,
                ..
            } => {
                let realm = self.realm_url(realm)?;
                {
                    let mut state = lock(&self.inner.auth);
                    state.scheme = Some(Scheme::Bearer {
                        realm: realm.clone(),
                        service: service.clone(),
                    });
                    state.tokens.remove(&scope_key(scopes));
                }
                let wanted = merge_scopes(scopes, challenged);
                let token = self
                    .fetch_token(&realm, service.as_deref(), &wanted)
                    .await?;
                lock(&self.inner.auth).store(scope_key(scopes), token);
                Ok(true)
            }
        }
    }

    /// The token realm as a URL; relative realms are on the registry.
    fn realm_url(&self, realm: &str) -> Result<Url, RemoteError> {
        let url = self.inner.base.join(realm).map_err(|e| {
            RemoteError::Protocol(format!(
                "{} names an invalid token realm {realm:?}: {e}",
                self.url()
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(RemoteError::Protocol(format!(
                "{} names a token realm that is not HTTP: {realm:?}",
                self.url()
            )));
        }
        Ok(url)
    }

    /// Asks the token service for a token granting `scopes`, with the credentials as Basic
    /// when there are any. Credentials only travel over HTTPS, unless the registry itself
    /// is plain HTTP (a local test registry).
    async fn fetch_token(
        &self,
        realm: &Url,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<CachedToken, RemoteError> {
        let mut url = realm.clone();
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            for scope in scopes {
                query.append_pair("scope", scope);
            }
        }
        let describe = format!("GET {}", realm.path());
        let service_host = host_of(realm);
        let mut request = self.inner.client.get(url.clone()).timeout(REQUEST_TIMEOUT);
        if let Some(credential) = &self.inner.credential {
            if realm.scheme() != "https" && self.inner.base.scheme() == "https" {
                return Err(RemoteError::Protocol(format!(
                    "{} sends its clients to the token service {} over plain HTTP; \
                     refusing to send the credentials there",
                    self.url(),
                    realm.origin().ascii_serialization()
                )));
            }
            request = request.basic_auth(&credential.username, Some(&credential.secret));
        }
        tracing::debug!(registry = %self.url(), token_service = %service_host, ?scopes, "fetching a token");
        let response = request
            .send()
            .await
            .map_err(|error| transport_error(&Method::GET, &url, &error))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            let answer = summary(&describe, response).await;
            let message = match &self.inner.credential {
                Some(c) => format!(
                    "{} refused the credentials of user {:?}: its token service \
                     {service_host} says {answer}",
                    self.url(),
                    c.username
                ),
                None => format!(
                    "{} requires credentials and none are configured: its token service \
                     {service_host} says {answer}",
                    self.url()
                ),
            };
            return Err(RemoteError::Unauthorized(message));
        }
        if !status.is_success() {
            return Err(self.failure(&describe, response).await);
        }
        let body = read_body(response, MAX_TOKEN_BYTES, &describe).await?;
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
            RemoteError::Protocol(format!(
                "the token service {service_host} answered something other than a token: {e}"
            ))
        })?;
        let value = answer
            .token
            .filter(|t| !t.is_empty())
            .or(answer.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| {
                RemoteError::Protocol(format!(
                    "the token service {service_host} answered without a token"
                ))
            })?;
        let mut header = HeaderValue::from_str(&format!("Bearer {value}")).map_err(|_| {
            RemoteError::Protocol(format!(
                "the token service {service_host} answered a token that cannot be sent in a header"
            ))
        })?;
        header.set_sensitive(true);
        Ok(CachedToken {
            header,
            renew_at: Instant::now() + renewal_delay(answer.expires_in),
        })
    }

    pub(super) fn basic_header(&self) -> Option<HeaderValue> {
        let credential = self.inner.credential.as_ref()?;
        let encoded = STANDARD.encode(format!("{}:{}", credential.username, credential.secret));
        let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

/// When to renew a token that lives `expires_in` seconds: shortly before it expires.
fn renewal_delay(expires_in: Option<f64>) -> Duration {
    let lifetime = expires_in
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
        .filter(|lifetime| *lifetime >= Duration::from_secs(1))
        .unwrap_or(DEFAULT_TOKEN_LIFETIME);
    lifetime - TOKEN_RENEWAL_MARGIN.min(lifetime / 4)
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scopes: Vec<String>,
        /// RFC 6750's `error`, e.g. `insufficient_scope`.
        error: Option<String>,
    },
}

/// The challenge to answer among a `401`'s `WWW-Authenticate` headers: `Bearer` if offered
/// (it is the more precise), else `Basic`.
pub(super) fn challenge_in(headers: &HeaderMap) -> Option<Challenge> {
    let challenges: Vec<Challenge> = headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(parse_www_authenticate)
        .collect();
    challenges
        .iter()
        .find(|c| matches!(c, Challenge::Bearer { .. }))
        .or_else(|| challenges.first())
        .cloned()
}

/// Parses a `WWW-Authenticate` value (RFC 7235): challenges of a scheme and parameters,
/// whose quoted values may hold commas and escaped quotes. Unknown schemes, and Bearer
/// challenges without a realm, are left out; an unterminated quote ends the parse.
fn parse_www_authenticate(header: &str) -> Vec<Challenge> {
    let mut challenges = Vec::new();
    let mut rest = header;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        let (scheme, after) = take_token(rest);
        if scheme.is_empty() {
            break;
        }
        rest = after;
        let mut params = Vec::new();
        loop {
            let item = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
            let (name, after_name) = take_token(item);
            let Some(value_text) = after_name.trim_start().strip_prefix('=') else {
                // Not `name=`: the next challenge's scheme, or the end.
                rest = item;
                break;
            };
            let Some((value, after_value)) = take_value(value_text.trim_start()) else {
                return challenges;
            };
            params.push((name.to_ascii_lowercase(), value));
            rest = after_value;
        }
        if let Some(challenge) = Challenge::from_parts(scheme, params) {
            challenges.push(challenge);
        }
    }
    challenges
}

impl Challenge {
    fn from_parts(scheme: &str, params: Vec<(String, String)>) -> Option<Self> {
        let param = |name: &str| {
            params
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Self::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let realm = param("realm").filter(|realm| !realm.is_empty())?;
        Some(Self::Bearer {
            realm,
            service: param("service").filter(|service| !service.is_empty()),
            scopes: param("scope")
                .map(|scope| scope.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            error: param("error"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(realm: &str, service: Option<&str>, scopes: &[&str]) -> Challenge {
        Challenge::Bearer {
            realm: realm.to_owned(),
            service: service.map(str::to_owned),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            error: None,
        }
    }

    #[test]
    fn a_bearer_challenge_with_commas_in_quotes() {
        let parsed = parse_www_authenticate(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:team/app:pull,push""#,
        );
        assert_eq!(
            parsed,
            [bearer(
                "https://auth.example.com/token",
                Some("registry.example.com"),
                &["repository:team/app:pull,push"]
            )]
        );
    }

    #[test]
    fn a_bearer_challenge_with_several_scopes_an_error_and_escapes() {
        let parsed = parse_www_authenticate(
            "bearer  realm = \"https://a/t\" , scope=\"repository:a:pull repository:b:pull,push\", \
             error=insufficient_scope, note=\"say \\\"hi\\\"\"",
        );
        assert_eq!(
            parsed,
            [Challenge::Bearer {
                realm: "https://a/t".to_owned(),
                service: None,
                scopes: vec![
                    "repository:a:pull".to_owned(),
                    "repository:b:pull,push".to_owned()
                ],
                error: Some("insufficient_scope".to_owned()),
            }]
        );
    }

    #[test]
    fn basic_and_several_challenges() {
        assert_eq!(
            parse_www_authenticate(r#"Basic realm="Registry Realm""#),
            [Challenge::Basic]
        );
        assert_eq!(parse_www_authenticate("Basic"), [Challenge::Basic]);
        let both = parse_www_authenticate(r#"Basic realm="x, y", Bearer realm="https://a/t""#);
        assert_eq!(both, [Challenge::Basic, bearer("https://a/t", None, &[])]);

        let mut headers = HeaderMap::new();
        headers.append(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"r\""),
        );
        headers.append(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"https://a/t\",service=\"s\""),
        );
        assert_eq!(
            challenge_in(&headers),
            Some(bearer("https://a/t", Some("s"), &[])),
            "Bearer is preferred"
        );
    }

    #[test]
    fn garbage_challenges_give_nothing_usable() {
        for garbage in [
            "",
            "   ",
            "=",
            ",,,",
            "Negotiate abc",
            "Bearer",
            "Bearer service=\"s\"",
            "Bearer realm=\"unterminated",
            "\"quoted\"",
        ] {
            assert_eq!(
                parse_www_authenticate(garbage),
                [],
                "{garbage:?} gives no challenge"
            );
        }
    }

    #[test]
    fn token_renewal() {
        assert_eq!(renewal_delay(None), Duration::from_secs(45));
        assert_eq!(renewal_delay(Some(0.0)), Duration::from_secs(45));
        assert_eq!(renewal_delay(Some(-5.0)), Duration::from_secs(45));
        assert_eq!(renewal_delay(Some(f64::NAN)), Duration::from_secs(45));
        assert_eq!(renewal_delay(Some(300.0)), Duration::from_secs(270));
        assert_eq!(renewal_delay(Some(8.0)), Duration::from_secs(6));
    }

    #[test]
    fn scope_sets() {
        let a = vec![
            "repository:b:pull".to_owned(),
            "repository:a:pull,push".to_owned(),
        ];
        let b = vec![
            "repository:a:pull,push".to_owned(),
            "repository:b:pull".to_owned(),
            "repository:b:pull".to_owned(),
        ];
        assert_eq!(scope_key(&a), scope_key(&b));
        assert_eq!(
            merge_scopes(
                &a,
                &["repository:b:pull".to_owned(), "repository:b:*".to_owned()]
            ),
            [
                "repository:b:pull",
                "repository:a:pull,push",
                "repository:b:*"
            ]
        );
    }
}
