//! Reading a remote registry's answers: the headers replication relies on, the locations
//! they point to, the token grammar of parameterized headers, and bodies read up to a limit.

use std::str::FromStr;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::header::{CONTENT_LENGTH, LOCATION};
use http::{HeaderMap, HeaderValue, Method};
use reqwest::{Response, Url};

use super::Digest;
use super::error::{RemoteError, transport_error};

const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";

/// Resolves a `Location` (or `Link`) against the URL it was answered for: it may be a
/// path, or absolute on another host.
pub(super) fn join_location(base: &Url, location: &str, context: &str) -> Result<Url, RemoteError> {
    let url = base.join(location).map_err(|e| {
        RemoteError::Protocol(format!(
            "{context}: the registry answered an invalid location {location:?}: {e}"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(RemoteError::Protocol(format!(
            "{context}: the registry answered a location that is not HTTP: {location:?}"
        )));
    }
    Ok(url)
}

/// The `Docker-Content-Digest` of an answer, if there is one.
pub(super) fn answered_digest(
    headers: &HeaderMap,
    describe: &str,
) -> Result<Option<Digest>, RemoteError> {
    let Some(value) = headers.get(DOCKER_CONTENT_DIGEST) else {
        return Ok(None);
    };
    let text = header_text(value, describe)?;
    Digest::from_str(text.trim()).map(Some).map_err(|e| {
        RemoteError::Protocol(format!(
            "{describe}: the registry answered an invalid Docker-Content-Digest: {}",
            e.message()
        ))
    })
}

pub(super) fn header_text(value: &HeaderValue, describe: &str) -> Result<String, RemoteError> {
    value.to_str().map(str::to_owned).map_err(|_| {
        RemoteError::Protocol(format!(
            "{describe}: the registry answered a header that is not text"
        ))
    })
}

pub(super) fn header_number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The `Content-Length` of an answer, which a blob answer must have.
pub(super) fn content_length(response: &Response, describe: &str) -> Result<u64, RemoteError> {
    header_number(response.headers(), CONTENT_LENGTH.as_str()).ok_or_else(|| {
        RemoteError::Protocol(format!("{describe}: the answer has no Content-Length"))
    })
}

/// The `Location` of an answer, which opening an upload session must have.
pub(super) fn location(response: &Response, describe: &str) -> Result<String, RemoteError> {
    let value = response.headers().get(LOCATION).ok_or_else(|| {
        RemoteError::Protocol(format!("{describe}: the registry answered no Location"))
    })?;
    header_text(value, describe)
}

/// Reads an answer's body, failing when it is larger than `limit`.
pub(super) async fn read_body(
    response: Response,
    limit: usize,
    describe: &str,
) -> Result<Bytes, RemoteError> {
    let too_large = || {
        RemoteError::Protocol(format!(
            "{describe}: the answer is larger than the {limit} bytes accepted"
        ))
    };
    if header_number(response.headers(), CONTENT_LENGTH.as_str())
        .is_some_and(|length| length > limit as u64)
    {
        return Err(too_large());
    }
    let url = response.url().clone();
    let mut stream = response.bytes_stream();
    let mut body = BytesMut::new();
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|error| transport_error(&Method::GET, &url, &error))?;
        if body.len() + piece.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&piece);
    }
    Ok(body.freeze())
}

/// Splits a token (RFC 7230 `tchar`s) off the front of `text`.
pub(super) fn take_token(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)))
        .unwrap_or(text.len());
    text.split_at(end)
}

/// Splits a parameter value, quoted or a token, off the front of `text`; `None` when a
/// quoted string does not end.
pub(super) fn take_value(text: &str) -> Option<(String, &str)> {
    let Some(quoted) = text.strip_prefix('"') else {
        let (value, rest) = take_token(text);
        return Some((value.to_owned(), rest));
    };
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '"' => return Some((value, &quoted[index + 1..])),
            '\\' => value.push(chars.next()?.1),
            c => value.push(c),
        }
    }
    None
}
