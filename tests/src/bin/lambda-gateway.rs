//! `lambda-gateway`: a stand-in for the API Gateway HTTP API of `infra/template.yaml`, in
//! front of the registry and token functions running under the Lambda runtime emulator
//! (`cargo lambda watch`). `tests/lambda/run.sh` puts docker, skopeo and curl behind it.
//!
//! ```text
//! lambda-gateway --listen 127.0.0.1:PORT --emulator http://127.0.0.1:PORT
//! ```
//!
//! Like API Gateway, it routes by method and path prefix (`GET`/`HEAD` on `/v2`, `/v2/` and
//! `/v2/{proxy+}` to `registry-pull`; `POST`, `PUT`, `PATCH` and `DELETE` on `/v2/{proxy+}` to
//! `registry-push`; `GET`/`POST` on `/service/token`, and `GET`, `HEAD`, `POST`, `PUT`,
//! `PATCH` and `DELETE` on `/api/v2.0/{proxy+}`, to `token`; anything else `404 {"message":"Not
//! Found"}`), refuses bodies over 10 MiB with `413`, joins repeated request headers with
//! commas, adds `X-Forwarded-*`, and gives up on a function after 30 s with `503`. The request
//! goes to the emulator's function URL, `<emulator>/lambda-url/<function><path>?<query>`,
//! which turns it into a payload format 2.0 event; the function's answer comes back with its
//! status, headers and body.
//!
//! One line per request goes to standard error: method, path and query, function, status,
//! milliseconds and the request body's bytes (`in=N`). The test reads it to see how each blob
//! `GET` was answered, and how many bytes of a push crossed the gateway.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;

/// API Gateway's limit on a request body (its quota says "10 MB").
const MAX_PAYLOAD: usize = 10 * 1024 * 1024;

/// API Gateway's integration timeout.
const INTEGRATION_TIMEOUT: Duration = Duration::from_secs(30);

const PULL_FUNCTION: &str = "registry-pull";
const PUSH_FUNCTION: &str = "registry-push";
const TOKEN_FUNCTION: &str = "token";

/// Headers about one hop of a connection, never forwarded either way.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    header::EXPECT,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

#[derive(Debug)]
struct Gateway {
    emulator: String,
    port: u16,
    client: reqwest::Client,
}

#[tokio::main]
async fn main() -> ExitCode {
    let (listen, emulator) = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(problem) => {
            eprintln!("lambda-gateway: {problem}");
            eprintln!("usage: lambda-gateway --listen 127.0.0.1:PORT --emulator http://HOST:PORT");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("lambda-gateway: cannot listen on {listen}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(INTEGRATION_TIMEOUT)
        .build()
        .expect("an HTTP client");
    let gateway = Arc::new(Gateway {
        emulator: emulator.trim_end_matches('/').to_owned(),
        port: listen.port(),
        client,
    });
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(gateway)
        .into_make_service_with_connect_info::<SocketAddr>();
    eprintln!("lambda-gateway: listening on {listen}, functions at {emulator}/lambda-url/");
    match axum::serve(listener, app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lambda-gateway: {error}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<(SocketAddr, String), String> {
    let (mut listen, mut emulator) = (None, None);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => {
                listen = Some(
                    value
                        .parse::<SocketAddr>()
                        .map_err(|error| format!("--listen {value}: {error}"))?,
                );
            }
            "--emulator" => emulator = Some(value),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    Ok((
        listen.ok_or("--listen is required")?,
        emulator.ok_or("--emulator is required")?,
    ))
}

/// The function a route of the template sends `method` on `path` to, if any.
fn route(method: &Method, path: &str) -> Option<&'static str> {
    // `{proxy+}` matches one or more characters; API Gateway ignores a trailing slash, so
    // `/v2/` is the `/v2` route and `/service/token/` the `/service/token` one.
    let proxy = path
        .strip_prefix("/v2/")
        .is_some_and(|rest| !rest.is_empty());
    let version_check = path == "/v2" || path == "/v2/";
    let token_service = path == "/service/token" || path == "/service/token/";
    let management = path
        .strip_prefix("/api/v2.0/")
        .is_some_and(|rest| !rest.is_empty());
    match *method {
        Method::GET | Method::HEAD if proxy || version_check => Some(PULL_FUNCTION),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE if proxy => Some(PUSH_FUNCTION),
        Method::GET | Method::POST if token_service => Some(TOKEN_FUNCTION),
        Method::GET
        | Method::HEAD
        | Method::POST
        | Method::PUT
        | Method::PATCH
        | Method::DELETE
            if management =>
        {
            Some(TOKEN_FUNCTION)
        }
        _ => None,
    }
}

async fn handle(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let target = request
        .uri()
        .path_and_query()
        .map_or_else(|| request.uri().path().to_owned(), ToString::to_string);
    let function = route(&method, request.uri().path());
    let (response, received) = match function {
        Some(function) => gateway.invoke(function, &target, peer, request).await,
        None => (message(StatusCode::NOT_FOUND, "Not Found"), 0),
    };
    eprintln!(
        "{method} {target} -> {} {} {}ms in={received}",
        function.unwrap_or("(no route)"),
        response.status().as_u16(),
        started.elapsed().as_millis()
    );
    response
}

impl Gateway {
    /// Sends the request to `function` through the emulator and relays its answer; also
    /// returns how many body bytes the gateway received.
    async fn invoke(
        &self,
        function: &str,
        target: &str,
        peer: SocketAddr,
        request: Request,
    ) -> (Response, usize) {
        let (parts, body) = request.into_parts();
        let declared_length = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        if declared_length.is_some_and(|length| length > MAX_PAYLOAD as u64) {
            return (
                message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large"),
                0,
            );
        }
        let Ok(body) = axum::body::to_bytes(body, MAX_PAYLOAD).await else {
            return (
                message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large"),
                MAX_PAYLOAD,
            );
        };
        let received = body.len();

        let mut headers = joined(&parts.headers);
        headers.insert("x-forwarded-for", header_value(&peer.ip().to_string()));
        headers.insert("x-forwarded-port", header_value(&self.port.to_string()));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        let url = format!("{}/lambda-url/{function}{target}", self.emulator);
        let sent = self
            .client
            .request(parts.method, url)
            .headers(headers)
            .body(body)
            .send()
            .await;
        let answer = match sent {
            Ok(answer) => answer,
            Err(error) if error.is_timeout() => {
                return (
                    message(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable"),
                    received,
                );
            }
            Err(error) => {
                eprintln!("lambda-gateway: {function} unreachable: {error}");
                return (
                    message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
                    received,
                );
            }
        };
        let status = answer.status();
        let mut response_headers = answer.headers().clone();
        for name in &HOP_BY_HOP {
            response_headers.remove(name);
        }
        let body = match answer.bytes().await {
            Ok(body) => body,
            Err(error) => {
                eprintln!("lambda-gateway: {function} answer cut short: {error}");
                return (
                    message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
                    received,
                );
            }
        };
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        *response.headers_mut() = response_headers;
        (response, received)
    }
}

/// The request headers as API Gateway hands them to a function: one value per name, repeated
/// headers joined with commas, and nothing that only concerns the client's connection.
fn joined(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in headers.keys() {
        if HOP_BY_HOP.contains(name) {
            continue;
        }
        let values: Vec<&[u8]> = headers
            .get_all(name)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        if let Ok(value) = HeaderValue::from_bytes(&values.join(&b","[..])) {
            out.insert(name.clone(), value);
        }
    }
    out
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("an address or a port is a valid header value")
}

/// API Gateway's own answers: `{"message": "..."}`.
fn message(status: StatusCode, text: &str) -> Response {
    let mut response = Response::new(Body::from(
        serde_json::json!({ "message": text }).to_string(),
    ));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_template() {
        let cases = [
            (Method::GET, "/v2", Some(PULL_FUNCTION)),
            (Method::GET, "/v2/", Some(PULL_FUNCTION)),
            (Method::HEAD, "/v2/", Some(PULL_FUNCTION)),
            (Method::GET, "/v2/a/b/manifests/v1", Some(PULL_FUNCTION)),
            (Method::HEAD, "/v2/a/blobs/sha256:00", Some(PULL_FUNCTION)),
            (Method::POST, "/v2/a/blobs/uploads/", Some(PUSH_FUNCTION)),
            (Method::PATCH, "/v2/a/blobs/uploads/x", Some(PUSH_FUNCTION)),
            (Method::PUT, "/v2/a/manifests/v1", Some(PUSH_FUNCTION)),
            (Method::DELETE, "/v2/a/manifests/v1", Some(PUSH_FUNCTION)),
            (Method::POST, "/v2/", None),
            (Method::PUT, "/v2", None),
            (Method::OPTIONS, "/v2/a/manifests/v1", None),
            (Method::GET, "/", None),
            (Method::GET, "/v2x/a", None),
            (Method::GET, "/service/token", Some(TOKEN_FUNCTION)),
            (Method::POST, "/service/token", Some(TOKEN_FUNCTION)),
            (Method::GET, "/service/token/", Some(TOKEN_FUNCTION)),
            (Method::PATCH, "/service/token", None),
            (Method::PUT, "/service/token", None),
            (Method::HEAD, "/service/token", None),
            (Method::GET, "/service/token/x", None),
            (Method::GET, "/service", None),
            (Method::GET, "/api/v2.0/projects", Some(TOKEN_FUNCTION)),
            (Method::HEAD, "/api/v2.0/projects", Some(TOKEN_FUNCTION)),
            (Method::POST, "/api/v2.0/projects", Some(TOKEN_FUNCTION)),
            (Method::PUT, "/api/v2.0/projects/a", Some(TOKEN_FUNCTION)),
            (
                Method::DELETE,
                "/api/v2.0/projects/a/robots/1",
                Some(TOKEN_FUNCTION),
            ),
            (
                Method::PATCH,
                "/api/v2.0/robots/robot$a+b",
                Some(TOKEN_FUNCTION),
            ),
            (Method::OPTIONS, "/api/v2.0/projects", None),
            (Method::GET, "/api/v2.0", None),
            (Method::GET, "/api/v2.0/", None),
            (Method::GET, "/api/v2.0x/projects", None),
            (Method::GET, "/api/v2.1/projects", None),
        ];
        for (method, path, function) in cases {
            assert_eq!(route(&method, path), function, "{method} {path}");
        }
    }

    #[test]
    fn repeated_headers_are_joined_and_hop_headers_dropped() {
        let mut headers = HeaderMap::new();
        headers.append(header::ACCEPT, HeaderValue::from_static("a/b"));
        headers.append(header::ACCEPT, HeaderValue::from_static("c/d"));
        headers.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        headers.append(header::CONTENT_TYPE, HeaderValue::from_static("x/y"));
        let out = joined(&headers);
        assert_eq!(out.get_all(header::ACCEPT).iter().count(), 1);
        assert_eq!(out[header::ACCEPT], "a/b,c/d");
        assert_eq!(out[header::CONTENT_TYPE], "x/y");
        assert!(!out.contains_key(header::CONNECTION));
    }

    #[test]
    fn arguments() {
        let args = |list: &[&str]| parse_args(list.iter().map(|s| (*s).to_owned()));
        let (listen, emulator) = args(&[
            "--listen",
            "127.0.0.1:8080",
            "--emulator",
            "http://127.0.0.1:9000",
        ])
        .expect("valid arguments");
        assert_eq!(listen.port(), 8080);
        assert_eq!(emulator, "http://127.0.0.1:9000");
        assert!(args(&["--listen", "127.0.0.1:8080"]).is_err());
        assert!(args(&["--listen"]).is_err());
        assert!(args(&["--port", "1"]).is_err());
    }
}
