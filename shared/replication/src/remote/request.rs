//! Sending requests to a remote registry: each goes out with what authorization is known
//! and again when a challenge teaches more, and downloads follow redirects without taking
//! the registry's authorization along.

use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use reqwest::{Response, Url};

use super::auth::challenge_in;
use super::error::{RemoteError, host_of, transport_error};
use super::response::{header_text, join_location};
use super::{OCTET_STREAM, REQUEST_TIMEOUT, RemoteRegistry};

/// Redirects followed for one download.
const MAX_REDIRECTS: usize = 10;

/// One request to send, possibly twice when the first answer asks for authentication.
pub(super) struct Call {
    method: Method,
    pub(super) url: Url,
    scopes: Vec<String>,
    headers: HeaderMap,
    payload: Payload,
    /// A whole-request deadline; `None` for streamed transfers.
    pub(super) timeout: Option<Duration>,
}

enum Payload {
    Empty,
    /// A body in memory, which can be sent again.
    Bytes(Bytes),
    /// A streamed body, sent at most once (`None` once taken).
    Stream(Option<reqwest::Body>),
}

impl Payload {
    fn replayable(&self) -> bool {
        !matches!(self, Self::Stream(_))
    }

    /// The body for the next attempt, `None` when there is none (or it was already sent).
    fn next_body(&mut self) -> Option<reqwest::Body> {
        match self {
            Self::Empty => None,
            Self::Bytes(bytes) => Some(reqwest::Body::from(bytes.clone())),
            Self::Stream(body) => body.take(),
        }
    }
}

impl Call {
    pub(super) fn new(method: Method, url: Url, scopes: Vec<String>) -> Self {
        Self {
            method,
            url,
            scopes,
            headers: HeaderMap::new(),
            payload: Payload::Empty,
            timeout: Some(REQUEST_TIMEOUT),
        }
    }

    pub(super) fn header(mut self, name: http::HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    pub(super) fn bytes(mut self, content_type: HeaderValue, bytes: Bytes) -> Self {
        self.headers.insert(CONTENT_TYPE, content_type);
        self.payload = Payload::Bytes(bytes);
        self
    }

    /// A streamed body of exactly `length` bytes, without a total deadline.
    pub(super) fn stream(mut self, length: u64, body: reqwest::Body) -> Self {
        self.headers
            .insert(CONTENT_TYPE, HeaderValue::from_static(OCTET_STREAM));
        self.headers
            .insert(CONTENT_LENGTH, HeaderValue::from(length));
        self.payload = Payload::Stream(Some(body));
        self.timeout = None;
        self
    }

    /// `METHOD /path`, without the query, which may carry upload state or signatures.
    pub(super) fn describe(&self) -> String {
        format!("{} {}", self.method, self.url.path())
    }
}

impl RemoteRegistry {
    /// `path` on the registry.
    pub(super) fn endpoint(&self, path: &str) -> Url {
        let mut url = self.inner.base.clone();
        url.set_path(path);
        url
    }

    /// Whether a URL is on the registry itself, the only place its authorization goes.
    pub(super) fn is_registry(&self, url: &Url) -> bool {
        url.origin() == self.inner.base.origin()
    }

    /// Sends a request with what authorization is known; on a `401` whose challenge tells
    /// something new, authenticates and sends it again, unless its body was streamed.
    pub(super) async fn execute(&self, mut call: Call) -> Result<Response, RemoteError> {
        let ours = self.is_registry(&call.url);
        let authorization = match ours {
            true => self.authorization(&call.scopes).await?,
            false => None,
        };
        let authorized = authorization.is_some();
        let response = self.send_once(&mut call, authorization).await?;
        if response.status() != StatusCode::UNAUTHORIZED || !ours || !call.payload.replayable() {
            return Ok(response);
        }
        let Some(challenge) = challenge_in(response.headers()) else {
            return Ok(response);
        };
        if !self.learn(&challenge, &call.scopes, authorized).await? {
            return Ok(response);
        }
        let authorization = self.authorization(&call.scopes).await?;
        self.send_once(&mut call, authorization).await
    }

    /// GET or HEAD following redirects; the registry's authorization only goes to the
    /// registry itself, never to the storage it redirects to.
    pub(super) async fn follow(&self, call: Call) -> Result<Response, RemoteError> {
        let describe = call.describe();
        let Call {
            method,
            mut url,
            scopes,
            headers,
            timeout,
            ..
        } = call;
        for _ in 0..=MAX_REDIRECTS {
            let hop = Call {
                method: method.clone(),
                url: url.clone(),
                scopes: scopes.clone(),
                headers: headers.clone(),
                payload: Payload::Empty,
                timeout,
            };
            let response = self.execute(hop).await?;
            let redirected = matches!(
                response.status(),
                StatusCode::MOVED_PERMANENTLY
                    | StatusCode::FOUND
                    | StatusCode::SEE_OTHER
                    | StatusCode::TEMPORARY_REDIRECT
                    | StatusCode::PERMANENT_REDIRECT
            );
            let Some(target) = response.headers().get(LOCATION).filter(|_| redirected) else {
                return Ok(response);
            };
            let target = header_text(target, &describe)?;
            url = join_location(&url, &target, &describe)?;
            tracing::debug!(request = %describe, to = %host_of(&url), "following a redirect");
        }
        Err(RemoteError::Protocol(format!(
            "{describe}: more than {MAX_REDIRECTS} redirects"
        )))
    }

    /// One attempt of a request.
    pub(super) async fn send_once(
        &self,
        call: &mut Call,
        authorization: Option<HeaderValue>,
    ) -> Result<Response, RemoteError> {
        let client = match call.payload {
            Payload::Stream(_) => &self.inner.uploads,
            _ => &self.inner.client,
        };
        let mut request = client
            .request(call.method.clone(), call.url.clone())
            .headers(call.headers.clone());
        if let Some(authorization) = authorization {
            request = request.header(AUTHORIZATION, authorization);
        }
        if let Some(timeout) = call.timeout {
            request = request.timeout(timeout);
        }
        if let Some(body) = call.payload.next_body() {
            request = request.body(body);
        }
        request
            .send()
            .await
            .map_err(|error| transport_error(&call.method, &call.url, &error))
    }
}
