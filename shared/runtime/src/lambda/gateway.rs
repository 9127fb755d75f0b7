//! What every function's router gets from API Gateway's events: the request id it logs
//! under, the caller's address, and no `Connection` header.

use axum::extract::Request;
use axum::http::header::CONNECTION;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use berth_http::{ClientAddress, Router};
use lambda_http::request::RequestContext;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What every function's router gets: the gateway's request id, the caller's address, and
/// no `Connection` header.
pub(super) fn gateway_layers(router: Router) -> Router {
    router
        .layer(axum::middleware::map_request(gateway_request_id))
        .layer(axum::middleware::map_request(gateway_source_ip))
        .layer(axum::middleware::map_response(without_connection_header))
}

/// Gives a request without an `X-Request-Id` the id API Gateway logs it under.
async fn gateway_request_id(mut request: Request) -> Request {
    if !request.headers().contains_key(&REQUEST_ID)
        && let Some(RequestContext::ApiGatewayV2(context)) = request.extensions().get()
        && let Some(value) = context
            .request_id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok())
    {
        request.headers_mut().insert(REQUEST_ID, value);
    }
    request
}

/// The caller's address as API Gateway saw it, for throttling failed logins per source.
/// (`X-Forwarded-For` is not used: the client writes its first entries.)
async fn gateway_source_ip(mut request: Request) -> Request {
    if let Some(RequestContext::ApiGatewayV2(context)) = request.extensions().get()
        && let Some(ip) = context.http.source_ip.clone()
    {
        request.extensions_mut().insert(ClientAddress(ip));
    }
    request
}

/// Drops `Connection`: it speaks of the client's connection, which API Gateway holds, not
/// the function.
async fn without_connection_header(mut response: Response) -> Response {
    response.headers_mut().remove(CONNECTION);
    response
}
