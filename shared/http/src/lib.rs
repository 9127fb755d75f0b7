//! Berth's HTTP edge: the endpoint parser, the handlers and the router that the local server
//! and every Lambda function mount unchanged.

pub mod endpoint;
mod handlers;
pub mod response;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use berth_core::{ErrorCode, Registry, RegistryError};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderName, HeaderValue};

pub use axum::Router;

pub use crate::endpoint::{Endpoint, Role};
use crate::response::{ApiError, Failure, header_value};

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
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            chunk_min_length: 1,
            chunk_max_length: None,
            role: None,
        }
    }
}

pub(crate) struct App {
    registry: Arc<Registry>,
    settings: Settings,
}

/// The registry router: every path goes through [`Endpoint::parse`], so the same code serves
/// any path depth, locally and in Lambda.
pub fn router(registry: Arc<Registry>, settings: Settings) -> Router {
    let app = Arc::new(App { registry, settings });
    Router::new()
        .fallback(dispatch)
        .with_state(app)
        .layer(middleware::from_fn(access_log))
}

async fn dispatch(State(app): State<Arc<App>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let sent_body = has_body(&parts.headers);
    let result = async {
        let endpoint = Endpoint::parse(&parts.method, parts.uri.path(), parts.uri.query())?;
        if let Some(role) = app.settings.role
            && endpoint.role() != role
        {
            return Err(RegistryError::new(
                ErrorCode::Unsupported,
                format!("{} {} is not served here", parts.method, parts.uri.path()),
            ));
        }
        handlers::handle(&app, endpoint, &parts, body).await
    }
    .await;
    let mut response = result.unwrap_or_else(|error| ApiError(error).into_response());
    let failed = response.status().is_client_error() || response.status().is_server_error();
    let headers = response.headers_mut();
    headers.insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    // A request refused before its body was read leaves unread bytes on the connection:
    // say so, rather than let the client reuse a connection the server will drop.
    if sent_body && failed {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Whether a request carries a body: a non-zero `Content-Length`, or a chunked one.
pub(crate) fn has_body(headers: &http::HeaderMap) -> bool {
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match length {
        Some(length) => length > 0,
        None => headers.contains_key(TRANSFER_ENCODING),
    }
}

/// Writes one structured line per request, including, once, the private cause of an
/// internal failure.
async fn access_log(request: Request, next: Next) -> Response {
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
    let mut response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed_us = started.elapsed().as_micros() as u64;
    match response.extensions().get::<Failure>() {
        Some(Failure {
            code,
            cause: Some(cause),
        }) => tracing::error!(
            target: "berth::access",
            request_id, %method, path, status, elapsed_us, code = code.as_str(), cause,
            "request failed"
        ),
        Some(Failure { code, cause: None }) => tracing::info!(
            target: "berth::access",
            request_id, %method, path, status, elapsed_us, code = code.as_str(),
            "request refused"
        ),
        None => tracing::info!(
            target: "berth::access",
            request_id, %method, path, status, elapsed_us,
            "request served"
        ),
    }
    response
        .headers_mut()
        .insert(REQUEST_ID, header_value(&request_id));
    response
}
