//! What can go wrong talking to a remote registry, and how a failed answer or a request
//! that got none becomes a [`RemoteError`] that names the registry, the request and what
//! it answered.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{Method, StatusCode};
use reqwest::{Response, Url};
use serde::Deserialize;

use super::auth::{Challenge, challenge_in};
use super::{Digest, RemoteRegistry};

/// How long reading the body of an error answer may take, so a failure is reported even
/// when the registry stalls on it.
const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an error answer is read to report it.
const MAX_ERROR_BYTES: usize = 64 * 1024;
/// How many characters of a registry's error message are quoted in ours.
const MAX_QUOTED_CHARS: usize = 300;

/// Why talking to a remote registry failed. Messages are meant for a person reading a
/// replication task's error: they name the registry, the request and what it answered.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// No answer: connection refused, DNS failure, TLS failure, timeout, connection lost.
    #[error("{0}")]
    Unreachable(String),
    /// The credentials were refused, or none are configured and the registry wants some.
    #[error("{0}")]
    Unauthorized(String),
    /// The credentials are valid but do not grant what was asked.
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    NotFound(String),
    /// The registry answered 5xx or 429: it is failing or overloaded right now.
    #[error("{message}")]
    Unavailable { status: u16, message: String },
    /// An answer this client cannot use: an unexpected status, a missing header, bad JSON.
    #[error("{0}")]
    Protocol(String),
    /// Content did not hash to the digest it was sent or announced under.
    #[error("{what}: expected digest {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// Reading the content to upload failed, or it was shorter than announced.
    #[error("{0}")]
    Io(String),
    /// The configuration or an argument is not valid (URL, repository name, reference).
    #[error("{0}")]
    Invalid(String),
}

impl RemoteError {
    /// Whether trying again later may succeed: the registry could not be reached, failed
    /// (5xx) or asked to slow down (429).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unreachable(_) | Self::Unavailable { .. })
    }
}

impl RemoteRegistry {
    /// The error for an answer the operation did not expect, quoting the registry's own
    /// OCI error if it sent one.
    pub(super) async fn failure(&self, describe: &str, response: Response) -> RemoteError {
        let status = response.status();
        let challenge = challenge_in(response.headers());
        let message = summary(describe, response).await;
        match status {
            StatusCode::UNAUTHORIZED => self.refusal(message, challenge.as_ref()),
            StatusCode::FORBIDDEN => {
                RemoteError::Denied(format!("{} denied access: {message}", self.url()))
            }
            StatusCode::NOT_FOUND => RemoteError::NotFound(format!("{}: {message}", self.url())),
            StatusCode::TOO_MANY_REQUESTS => RemoteError::Unavailable {
                status: status.as_u16(),
                message: format!("{} asks to slow down: {message}", self.url()),
            },
            status if status.is_server_error() => RemoteError::Unavailable {
                status: status.as_u16(),
                message: format!("{} failed: {message}", self.url()),
            },
            _ => RemoteError::Protocol(format!("{}: unexpected answer: {message}", self.url())),
        }
    }

    /// A `401` that authentication did not get past.
    fn refusal(&self, message: String, challenge: Option<&Challenge>) -> RemoteError {
        let insufficient = matches!(
            challenge,
            Some(Challenge::Bearer { error: Some(error), .. }) if error == "insufficient_scope"
        );
        match &self.inner.credential {
            Some(c) if insufficient => RemoteError::Denied(format!(
                "user {:?} may not do this on {}: {message}",
                c.username,
                self.url()
            )),
            Some(c) => RemoteError::Unauthorized(format!(
                "{} refused the credentials of user {:?}: {message}",
                self.url(),
                c.username
            )),
            None => RemoteError::Unauthorized(format!(
                "{} requires credentials and none are configured: {message}",
                self.url()
            )),
        }
    }
}

pub(super) fn mismatch(what: &str, expected: &Digest, actual: &Digest) -> RemoteError {
    RemoteError::DigestMismatch {
        what: what.to_owned(),
        expected: expected.to_string(),
        actual: actual.to_string(),
    }
}

/// Reads at most `limit` bytes of an answer, best effort: for quoting an error.
async fn read_prefix(response: Response, limit: usize) -> Bytes {
    let mut stream = response.bytes_stream();
    let mut body = BytesMut::new();
    let read = async {
        while let Some(Ok(piece)) = stream.next().await {
            let room = limit.saturating_sub(body.len());
            body.extend_from_slice(&piece[..piece.len().min(room)]);
            if body.len() >= limit {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(ERROR_BODY_TIMEOUT, read).await;
    body.freeze()
}

/// `METHOD /path answered STATUS[: CODE: message]`, quoting the first OCI error of the
/// answer's body if it has one.
pub(super) async fn summary(describe: &str, response: Response) -> String {
    let status = response.status();
    let body = read_prefix(response, MAX_ERROR_BYTES).await;
    match first_oci_error(&body) {
        Some(error) => format!("{describe} answered {status}: {error}"),
        None => format!("{describe} answered {status}"),
    }
}

/// `CODE: message` of the first error in an OCI error body.
fn first_oci_error(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<OciError>,
    }
    #[derive(Deserialize)]
    struct OciError {
        code: Option<String>,
        message: Option<String>,
    }
    let first = serde_json::from_slice::<Errors>(body)
        .ok()?
        .errors
        .into_iter()
        .next()?;
    let text = match (first.code, first.message) {
        (Some(code), Some(message)) if !message.is_empty() => format!("{code}: {message}"),
        (Some(code), _) => code,
        (None, Some(message)) => message,
        (None, None) => return None,
    };
    Some(
        text.chars()
            .filter(|c| !c.is_control())
            .take(MAX_QUOTED_CHARS)
            .collect(),
    )
}

/// `host:port` of a URL, to name a server without its paths or queries.
pub(super) fn host_of(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// The error for a request that got no answer. The URL is left out but for its host and
/// path: a redirect target's query may hold a signature.
pub(super) fn transport_error(method: &Method, url: &Url, error: &reqwest::Error) -> RemoteError {
    let host = host_of(url);
    let cause = innermost_cause(error);
    let path = url.path();
    if error.is_builder() {
        return RemoteError::Invalid(format!("cannot build {method} {path} for {host}: {cause}"));
    }
    if error.is_timeout() {
        return RemoteError::Unreachable(format!(
            "{host} did not answer {method} {path} in time: {cause}"
        ));
    }
    if error.is_connect() {
        return RemoteError::Unreachable(format!("cannot reach {host}: {cause}"));
    }
    RemoteError::Unreachable(format!(
        "the connection to {host} failed during {method} {path}: {cause}"
    ))
}

/// The deepest cause of an error, which names what actually went wrong ("connection
/// refused", "dns error") rather than the layer that reported it.
pub(super) fn innermost_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_errors_are_quoted() {
        assert_eq!(
            first_oci_error(
                br#"{"errors":[{"code":"NAME_UNKNOWN","message":"no such repo"},{"code":"X"}]}"#
            )
            .as_deref(),
            Some("NAME_UNKNOWN: no such repo")
        );
        assert_eq!(
            first_oci_error(br#"{"errors":[{"code":"DENIED"}]}"#).as_deref(),
            Some("DENIED")
        );
        assert_eq!(first_oci_error(b"<html>"), None);
        assert_eq!(first_oci_error(br#"{"errors":[]}"#), None);
    }

    #[test]
    fn retryable_errors() {
        assert!(RemoteError::Unreachable("x".into()).is_retryable());
        assert!(
            RemoteError::Unavailable {
                status: 503,
                message: "x".into()
            }
            .is_retryable()
        );
        assert!(
            RemoteError::Unavailable {
                status: 429,
                message: "x".into()
            }
            .is_retryable()
        );
        assert!(!RemoteError::Unauthorized("x".into()).is_retryable());
        assert!(!RemoteError::Protocol("x".into()).is_retryable());
        assert!(!RemoteError::NotFound("x".into()).is_retryable());
    }
}
