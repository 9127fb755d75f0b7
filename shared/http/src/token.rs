//! The token endpoint, `GET` and `POST /service/token`, as docker, podman and containerd
//! use it:
//!
//! * `GET /service/token?service=..&scope=..&scope=..[&offline_token=true]`, with Basic
//!   credentials of a user or robot account, or none for an anonymous token;
//! * `POST /service/token` with an OAuth2 form: `grant_type=password` (`username`,
//!   `password`) or `grant_type=refresh_token` (`refresh_token`), `service`, `scope`
//!   (space separated), `client_id`, and `access_type=offline` for a refresh token.
//!
//! The answer is `{"token", "access_token", "expires_in", "issued_at"[, "refresh_token"]}`.
//! Asking for more than one may have is not an error: the token grants what is allowed.
//! Wrong credentials are `401 UNAUTHORIZED`; too many of them from one source are `429
//! TOOMANYREQUESTS`, without checking the password.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use berth_app::SignIn;
use berth_auth::{Principal, TokenService, parse_scopes, unix_now};
use berth_core::{Actor, EntryPoint, ErrorCode, EventSink, RegistryError, Result};
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Limited};

use crate::Router;
use crate::response::ApiError;

/// The path of the token endpoint.
pub const TOKEN_PATH: &str = "/service/token";

/// The largest `POST` form accepted.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// Where a request came from, for throttling failed logins per source. The server (or the
/// Lambda adapter) inserts it into the request's extensions; without it the source is
/// `unknown`.
#[derive(Debug, Clone)]
pub struct ClientAddress(pub String);

/// Records the peer address a server accepted the connection from (axum's `ConnectInfo`)
/// as the request's [`ClientAddress`]. For servers that face clients directly: behind a
/// proxy, the peer is the proxy.
pub async fn remember_peer(mut request: Request, next: axum::middleware::Next) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip().to_string());
    if let Some(peer) = peer {
        request.extensions_mut().insert(ClientAddress(peer));
    }
    next.run(request).await
}

/// The token endpoint of one registry.
#[derive(Debug)]
pub struct TokenEndpoint {
    service: Arc<TokenService>,
    sign_in: SignIn,
    /// The service name tokens are for; a request naming another is refused.
    service_name: String,
}

impl TokenEndpoint {
    pub fn new(service: Arc<TokenService>, service_name: impl Into<String>) -> Self {
        Self {
            sign_in: SignIn::new(service.clone()),
            service,
            service_name: service_name.into(),
        }
    }

    /// Publishes sign-ins, accepted and refused, to `events`.
    pub fn with_events(mut self, events: Arc<dyn EventSink>) -> Self {
        self.sign_in = self.sign_in.with_events(events);
        self
    }
}

/// `GET` and `POST` [`TOKEN_PATH`].
pub fn token_router(endpoint: Arc<TokenEndpoint>) -> Router {
    Router::new()
        .route(TOKEN_PATH, get(answer).post(answer))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(endpoint)
        .layer(axum::middleware::from_fn(crate::access_log))
}

/// A known path asked with a method it does not take, answered like every other refusal.
pub(crate) async fn method_not_allowed(method: Method, uri: http::Uri) -> ApiError {
    ApiError(RegistryError::new(
        ErrorCode::Unsupported,
        format!("{method} is not allowed on {}", uri.path()),
    ))
}

async fn answer(State(endpoint): State<Arc<TokenEndpoint>>, request: Request) -> Response {
    let mut actor = Actor::Anonymous;
    let mut response = match issue(&endpoint, request, &mut actor).await {
        Ok(response) => response,
        Err(error) => ApiError(error).into_response(),
    };
    response.extensions_mut().insert(actor);
    response
}

/// What a token request asks for, from either form.
#[derive(Default)]
struct TokenRequest {
    service: Option<String>,
    scopes: Vec<String>,
    credentials: Option<(String, String)>,
    refresh_token: Option<String>,
    offline: bool,
}

async fn issue(endpoint: &TokenEndpoint, request: Request, actor: &mut Actor) -> Result<Response> {
    let (parts, body) = request.into_parts();
    let context = crate::request_context(&parts.extensions, Actor::Anonymous, EntryPoint::Token);
    let request = if parts.method == Method::POST {
        read_form(&parts.headers, body).await?
    } else {
        read_query(parts.uri.query().unwrap_or(""), &parts.headers)?
    };
    if let Some(asked) = &request.service
        && *asked != endpoint.service_name
    {
        return Err(RegistryError::new(
            ErrorCode::Denied,
            format!(
                "this token service issues tokens for the service {:?}, not {asked:?}",
                endpoint.service_name
            ),
        ));
    }
    let scopes = parse_scopes(request.scopes.iter().map(String::as_str))?;
    let now = unix_now();
    let service = &endpoint.service;
    let principal = match (&request.refresh_token, &request.credentials) {
        (Some(refresh), _) => service.authenticate_refresh(refresh, now).await?,
        (None, Some((name, secret))) => {
            endpoint
                .sign_in
                .authenticate(&context, Some((name, secret)), true)
                .await?
                .principal
        }
        (None, None) => Principal::Anonymous,
    };
    *actor = Actor::named(principal.subject());
    let access = service.grant(&principal, &scopes, now).await?;
    tracing::info!(
        target: "berth::token",
        subject = principal.subject(),
        granted = access.len(),
        requested = scopes.len(),
        "token issued"
    );
    // A refresh grant does not renew the refresh token: it ends when it was meant to.
    let offline = request.offline && request.refresh_token.is_none();
    let token = service.issue(&principal, access, offline, now)?;
    let body = serde_json::to_vec(&token)
        .map_err(|e| RegistryError::internal(format!("encoding a token answer: {e}")))?;
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "application/json")
        .header(CACHE_CONTROL, HeaderValue::from_static("no-store"))
        .body(Body::from(body))
        .map_err(|e| RegistryError::internal(format!("building a token answer: {e}")))
}

/// `GET`: query parameters, Basic credentials.
fn read_query(query: &str, headers: &HeaderMap) -> Result<TokenRequest> {
    let mut request = TokenRequest {
        credentials: basic_credentials(headers)?,
        ..TokenRequest::default()
    };
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "service" => request.service = Some(value.into_owned()),
            "scope" => request.scopes.push(value.into_owned()),
            "offline_token" => request.offline = value == "true",
            _ => {}
        }
    }
    Ok(request)
}

/// `POST`: an OAuth2 form (RFC 6749 sections 4.3 and 6).
async fn read_form(headers: &HeaderMap, body: Body) -> Result<TokenRequest> {
    let is_form = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(bad_request(
            "a token POST takes an application/x-www-form-urlencoded form",
        ));
    }
    let bytes = Limited::new(body, MAX_FORM_BYTES)
        .collect()
        .await
        .map_err(|_| bad_request("the form is too large or could not be read"))?
        .to_bytes();
    let mut request = TokenRequest::default();
    let (mut grant_type, mut username, mut password) = (None, None, None);
    for (key, value) in form_urlencoded::parse(&bytes) {
        match &*key {
            "grant_type" => grant_type = Some(value.into_owned()),
            "service" => request.service = Some(value.into_owned()),
            "scope" => request.scopes.push(value.into_owned()),
            "access_type" => request.offline = value == "offline",
            "username" => username = Some(value.into_owned()),
            "password" => password = Some(value.into_owned()),
            "refresh_token" => request.refresh_token = Some(value.into_owned()),
            _ => {}
        }
    }
    match grant_type.as_deref() {
        Some("password") => match (username, password) {
            (Some(username), Some(password)) => request.credentials = Some((username, password)),
            _ => {
                return Err(bad_request(
                    "grant_type=password needs username and password",
                ));
            }
        },
        Some("refresh_token") => {
            if request.refresh_token.is_none() {
                return Err(bad_request("grant_type=refresh_token needs refresh_token"));
            }
        }
        Some(other) => {
            return Err(bad_request(&format!(
                "unsupported grant_type {other:?}: use password or refresh_token"
            )));
        }
        None => return Err(bad_request("the form names no grant_type")),
    }
    Ok(request)
}

/// The `Authorization: Basic` credentials, if any.
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let invalid = || {
        RegistryError::new(
            ErrorCode::Unauthorized,
            "the Authorization header is not valid Basic credentials",
        )
    };
    let value = value.to_str().map_err(|_| invalid())?;
    let (scheme, encoded) = value.split_once(' ').ok_or_else(invalid)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(invalid());
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| invalid())?;
    let decoded = String::from_utf8(decoded).map_err(|_| invalid())?;
    let (name, secret) = decoded.split_once(':').ok_or_else(invalid)?;
    Ok(Some((name.to_owned(), secret.to_owned())))
}

fn bad_request(message: &str) -> RegistryError {
    RegistryError::new(ErrorCode::BadRequest, message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(text: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(text))).expect("a header"),
        );
        headers
    }

    #[test]
    fn basic_credentials_are_split_at_the_first_colon() {
        assert_eq!(
            basic_credentials(&basic("alice:pa:ss")).expect("valid"),
            Some(("alice".to_owned(), "pa:ss".to_owned()))
        );
        assert_eq!(basic_credentials(&HeaderMap::new()).expect("none"), None);
        assert!(basic_credentials(&basic("no-colon")).is_err());
        let mut bearer = HeaderMap::new();
        bearer.insert(AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert!(basic_credentials(&bearer).is_err());
    }

    #[test]
    fn a_query_repeats_scope() {
        let request = read_query(
            "service=berth&scope=repository:a/b:pull&scope=repository:c:push%20registry:catalog:*&offline_token=true",
            &basic("alice:secret"),
        )
        .expect("valid");
        assert_eq!(request.service.as_deref(), Some("berth"));
        assert_eq!(
            request.scopes,
            [
                "repository:a/b:pull",
                "repository:c:push registry:catalog:*"
            ]
        );
        assert!(request.offline);
        assert_eq!(
            request.credentials,
            Some(("alice".to_owned(), "secret".to_owned()))
        );
    }

    async fn form(body: &str) -> Result<TokenRequest> {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        read_form(&headers, Body::from(body.to_owned())).await
    }

    #[tokio::test]
    async fn oauth_forms() {
        let request = form("grant_type=password&username=alice&password=s%26cret&service=berth&client_id=docker&access_type=offline&scope=repository:a:pull+repository:b:push")
            .await
            .expect("a password grant");
        assert_eq!(
            request.credentials,
            Some(("alice".to_owned(), "s&cret".to_owned()))
        );
        assert!(request.offline);
        assert_eq!(request.scopes, ["repository:a:pull repository:b:push"]);

        let request = form("grant_type=refresh_token&refresh_token=abc&service=berth")
            .await
            .expect("a refresh grant");
        assert_eq!(request.refresh_token.as_deref(), Some("abc"));

        for bad in [
            "grant_type=password&username=alice",
            "grant_type=refresh_token",
            "grant_type=client_credentials",
            "username=alice&password=x",
        ] {
            let error = form(bad).await.err().expect("refused");
            assert_eq!(error.code(), ErrorCode::BadRequest, "{bad}");
        }
    }
}
