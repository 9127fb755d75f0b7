//! Berth's HTTP edge: the endpoint parser, the handlers and the router that the local server
//! and every Lambda function mount unchanged.

pub mod api;
pub mod auth;
pub mod endpoint;
pub mod front;
mod handlers;
#[cfg(feature = "replication")]
pub mod replication;
pub mod response;
pub mod token;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use berth_core::{Actor, EntryPoint, ErrorCode, Registry, RegistryError, RequestContext};
use futures_util::FutureExt;
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderName, HeaderValue};
use http_body_util::{BodyExt, LengthLimitError, Limited};

pub use axum::Router;

pub use crate::api::{
    AccountSettings, ManagementApi, ProjectCreation, api_router, api_router_with,
};
pub use crate::auth::{KEY_MAX_AGE, KEY_RELOAD_INTERVAL, KeyRefresh, KeySource, RegistryAuth};
pub use crate::endpoint::{Endpoint, Role};
pub use crate::front::UploadHandoff;
use crate::response::{ApiError, Failure, header_value};
pub use crate::token::{ClientAddress, TokenEndpoint, remember_peer, token_router};

const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How the edge behaves in one deployment shape.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Advertised as `OCI-Chunk-Min-Length` when an upload session opens.
    pub chunk_min_length: u64,
    /// Advertised as `OCI-Chunk-Max-Length` when set.
    pub chunk_max_length: Option<u64>,
    /// When set, only endpoints of this role are served; others answer `UNSUPPORTED`.
    pub role: Option<Role>,
    /// When set, the largest request body accepted, in bytes. A larger one is refused with
    /// `PAYLOAD_TOO_LARGE` before its handler runs, so nothing of it is written: by its
    /// `Content-Length`, or while it is read when it declares none. Bodies are then read
    /// whole before their handler runs, as a Lambda function receives them anyway.
    pub max_body: Option<u64>,
    /// Answer a panicking handler with an OCI `UNKNOWN` error (500) instead of letting the
    /// panic reach the server, where a Lambda runtime would turn it into a bare 502.
    pub contain_panics: bool,
    /// Token auth on every endpoint; `None` serves everyone everything (`berth serve
    /// --open`).
    pub auth: Option<Arc<RegistryAuth>>,
    /// When set, an upload session's `POST` sends the client on to the upload front
    /// ([`front`]), with a grant for that session.
    pub upload_handoff: Option<Arc<UploadHandoff>>,
    /// When set, this is the upload front: it serves upload sessions only, to requests
    /// carrying a grant this key signed, instead of checking tokens.
    pub upload_front: Option<Arc<berth_auth::GrantKey>>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            chunk_min_length: 1,
            chunk_max_length: None,
            role: None,
            max_body: None,
            contain_panics: false,
            auth: None,
            upload_handoff: None,
            upload_front: None,
        }
    }
}

/// The id the access log gives a request, for the handlers' request context.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub String);

/// The request context of a request, from what the edge knows of it: the request id the
/// access log gave it, the client's address, and who `actor` is.
pub(crate) fn request_context(
    extensions: &http::Extensions,
    actor: Actor,
    entry: EntryPoint,
) -> RequestContext {
    let request_id = extensions
        .get::<RequestId>()
        .map_or_else(String::new, |id| id.0.clone());
    let client = extensions
        .get::<ClientAddress>()
        .map_or_else(|| "unknown".to_owned(), |address| address.0.clone());
    RequestContext::new(actor, request_id, client, entry)
}

pub(crate) struct App {
    registry: Arc<Registry>,
    settings: Settings,
}

/// The registry router: every path goes through [`Endpoint::parse`], so the same code serves
/// any path depth, locally and in Lambda.
pub fn router(registry: Arc<Registry>, settings: Settings) -> Router {
    let contain_panics = settings.contain_panics;
    let app = Arc::new(App { registry, settings });
    let mut router = Router::new().fallback(dispatch).with_state(app);
    if contain_panics {
        router = router.layer(middleware::from_fn(answer_panics));
    }
    router.layer(middleware::from_fn(access_log))
}

async fn dispatch(State(app): State<Arc<App>>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let sent_body = has_body(&parts.headers);
    let mut admitted = None;
    let mut actor_slot = None;
    let known_actor = &mut actor_slot;
    let result = async {
        let mut endpoint = Endpoint::parse(&parts.method, parts.uri.path(), parts.uri.query())?;
        let (mut actor, mut entry) = (Actor::Anonymous, EntryPoint::Registry);
        if let Some(key) = &app.settings.upload_front {
            // Before any of the body is read: a refused upload writes nothing.
            let grant = front::admit(key, &endpoint, parts.uri.query())?;
            (actor, entry) = (Actor::named(&grant.grant.actor), EntryPoint::UploadFront);
            admitted = Some(grant);
        } else {
            if let Some(role) = app.settings.role
                && endpoint.role() != role
            {
                return Err(RegistryError::new(
                    ErrorCode::Unsupported,
                    format!("{} {} is not served here", parts.method, parts.uri.path()),
                ));
            }
            if let Some(auth) = &app.settings.auth {
                auth.refresh_keys_for(&parts.headers).await;
                actor = Actor::named(&auth.authorize(&mut endpoint, &parts.headers)?);
            }
        }
        let context = request_context(&parts.extensions, actor, entry);
        *known_actor = Some(context.actor.clone());
        let body = match app.settings.max_body {
            Some(limit) => {
                let whole = read_whole(&endpoint, &parts.headers, body, limit).await?;
                // The length is known now, whatever the request declared (an event from
                // API Gateway may declare none).
                parts.headers.remove(TRANSFER_ENCODING);
                parts
                    .headers
                    .insert(CONTENT_LENGTH, HeaderValue::from(whole.len()));
                Body::from(whole)
            }
            None => body,
        };
        handlers::handle(&app, endpoint, &parts, body, &context).await
    }
    .await;
    let mut response = result.unwrap_or_else(|error| ApiError(error).into_response());
    let failed = response.status().is_client_error() || response.status().is_server_error();
    if let Some(actor) = actor_slot {
        response.extensions_mut().insert(actor);
    }
    let headers = response.headers_mut();
    if let Some(admitted) = &admitted {
        front::keep_grant(headers, admitted);
    }
    headers.insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    // A request refused before its body was read leaves unread bytes on the connection:
    // say so, rather than let the client reuse a connection the server will drop.
    if sent_body && failed {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Reads a request body of at most `limit` bytes into memory, refusing a larger one before
/// anything of it reaches a handler.
async fn read_whole(
    endpoint: &Endpoint,
    headers: &http::HeaderMap,
    body: Body,
    limit: u64,
) -> berth_core::Result<bytes::Bytes> {
    let too_large = || {
        let advice = match endpoint {
            Endpoint::StartUpload { .. }
            | Endpoint::PatchUpload { .. }
            | Endpoint::CompleteUpload { .. } => format!(
                "; send the blob in chunks instead: open a session with POST, then PATCH \
                 chunks of at most {limit} bytes, each with its Content-Range"
            ),
            _ => String::new(),
        };
        RegistryError::new(
            ErrorCode::PayloadTooLarge,
            format!("a request body may hold at most {limit} bytes here{advice}"),
        )
        .with_detail(serde_json::json!({ "limit": limit }))
    };
    if declared_length(headers).is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(too_large()),
        Err(error) => Err(RegistryError::internal(format!(
            "the request body could not be read: {error}"
        ))),
    }
}

fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Whether a request carries a body: a non-zero `Content-Length`, or a chunked one.
pub(crate) fn has_body(headers: &http::HeaderMap) -> bool {
    match declared_length(headers) {
        Some(length) => length > 0,
        None => headers.contains_key(TRANSFER_ENCODING),
    }
}

/// Turns a handler's panic into an OCI `UNKNOWN` error whose cause the access log records.
async fn answer_panics(request: Request, next: Next) -> Response {
    match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            ApiError(RegistryError::internal(format!(
                "handler panicked: {message}"
            )))
            .into_response()
        }
    }
}

/// Writes one structured line per request, including, once, the private cause of an
/// internal failure.
pub(crate) async fn access_log(request: Request, next: Next) -> Response {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let started = Instant::now();
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128)
        .map_or_else(
            || format!("{:x}", NEXT_ID.fetch_add(1, Ordering::Relaxed)),
            str::to_owned,
        );
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let mut request = request;
    request
        .extensions_mut()
        .insert(RequestId(request_id.clone()));
    let mut response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed_us = started.elapsed().as_micros() as u64;
    // Who the request turned out to be, once its credentials were checked.
    let actor = response
        .extensions()
        .get::<Actor>()
        .map_or("", |actor| actor.name());
    match response.extensions().get::<Failure>() {
        Some(Failure {
            code,
            cause: Some(cause),
        }) => tracing::error!(
            target: "berth::access",
            request_id, %method, path, status, elapsed_us, actor, code = code.as_str(), cause,
            "request failed"
        ),
        Some(Failure { code, cause: None }) => tracing::info!(
            target: "berth::access",
            request_id, %method, path, status, elapsed_us, actor, code = code.as_str(),
            "request refused"
        ),
        None => tracing::info!(
            target: "berth::access",
            request_id, %method, path, status, elapsed_us, actor,
            "request served"
        ),
    }
    response
        .headers_mut()
        .insert(REQUEST_ID, header_value(&request_id));
    response
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use axum::routing::get;
    use bytes::Bytes;
    use futures_util::StreamExt;
    use tower::ServiceExt;

    use super::*;

    fn patch_upload() -> Endpoint {
        Endpoint::parse(
            &http::Method::PATCH,
            "/v2/library/hello/blobs/uploads/6f1c2d3e-4a5b-4c6d-8e7f-8091a2b3c4d5",
            None,
        )
        .expect("an upload endpoint")
    }

    fn with_length(length: u64) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
        headers
    }

    /// A body of `chunks` chunks of `size` bytes that records whether it was read.
    fn chunked_body(chunks: usize, size: usize, read: Arc<AtomicBool>) -> Body {
        let stream = futures_util::stream::iter(0..chunks).map(move |_| {
            read.store(true, Ordering::Relaxed);
            Ok::<_, std::io::Error>(Bytes::from(vec![7u8; size]))
        });
        Body::from_stream(stream)
    }

    fn assert_too_large(error: RegistryError, limit: u64) {
        assert_eq!(error.code(), ErrorCode::PayloadTooLarge);
        assert_eq!(error.code().status(), 413);
        let message = error.message();
        assert!(message.contains(&limit.to_string()), "{message}");
        assert!(message.contains("Content-Range"), "{message}");
        assert_eq!(error.detail(), Some(&serde_json::json!({ "limit": limit })));
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_unread() {
        let read = Arc::new(AtomicBool::new(false));
        let body = chunked_body(1, 10, read.clone());
        let error = read_whole(&patch_upload(), &with_length(101), body, 100)
            .await
            .expect_err("over the limit");
        assert_too_large(error, 100);
        assert!(!read.load(Ordering::Relaxed), "the body was read");
    }

    #[tokio::test]
    async fn an_undeclared_body_over_the_limit_is_refused_while_read() {
        let body = chunked_body(5, 30, Arc::default());
        let error = read_whole(&patch_upload(), &http::HeaderMap::new(), body, 100)
            .await
            .expect_err("150 bytes over a 100-byte limit");
        assert_too_large(error, 100);
    }

    #[tokio::test]
    async fn a_body_at_the_limit_is_passed_on_whole() {
        let body = chunked_body(4, 25, Arc::default());
        let whole = read_whole(&patch_upload(), &with_length(100), body, 100)
            .await
            .expect("at the limit");
        assert_eq!(whole, vec![7u8; 100]);
    }

    #[tokio::test]
    async fn only_blob_uploads_are_advised_to_chunk() {
        let manifest = Endpoint::parse(
            &http::Method::PUT,
            "/v2/library/hello/manifests/latest",
            None,
        )
        .expect("a manifest endpoint");
        let error = read_whole(&manifest, &with_length(11), Body::empty(), 10)
            .await
            .expect_err("over the limit");
        assert_eq!(error.code(), ErrorCode::PayloadTooLarge);
        assert!(!error.message().contains("chunk"), "{}", error.message());
    }

    async fn explode() -> &'static str {
        panic!("secret state")
    }

    #[tokio::test]
    async fn a_panic_becomes_an_oci_error() {
        let router: Router = Router::new()
            .route("/", get(explode))
            .layer(middleware::from_fn(answer_panics));
        let response = router
            .oneshot(
                http::Request::get("/")
                    .body(Body::empty())
                    .expect("a request"),
            )
            .await
            .expect("infallible");
        assert_eq!(response.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        let failure = response
            .extensions()
            .get::<Failure>()
            .expect("the failure for the access log")
            .clone();
        assert_eq!(failure.code, ErrorCode::Unknown);
        assert_eq!(
            failure.cause.as_deref(),
            Some("handler panicked: secret state")
        );
        let body = response.into_body().collect().await.expect("a body");
        let body: serde_json::Value =
            serde_json::from_slice(&body.to_bytes()).expect("a JSON body");
        assert_eq!(body["errors"][0]["code"], "UNKNOWN");
        assert!(!body.to_string().contains("secret"), "{body}");
    }
}
