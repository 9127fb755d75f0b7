//! Blobs on a remote registry: checking, mounting and downloading them, and uploading them
//! through an upload session, whole or in chunks.

use std::io;

use futures_util::TryStreamExt;
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, LOCATION, RANGE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use reqwest::{Response, Url};

use super::auth::{pull_scopes, push_scopes, scope_key};
use super::error::{RemoteError, host_of, innermost_cause, mismatch};
use super::request::Call;
use super::response::{
    answered_digest, content_length, header_number, header_text, join_location, location,
};
use super::upload_body::{Portion, SharedSource, Source, stalled};
use super::{ByteStream, Digest, READ_TIMEOUT, RemoteRegistry, lock, repository};

const OCI_CHUNK_MIN_LENGTH: &str = "oci-chunk-min-length";
const OCI_CHUNK_MAX_LENGTH: &str = "oci-chunk-max-length";

impl RemoteRegistry {
    /// The size of a blob, `None` when the repository does not have it.
    pub async fn blob_size(&self, repo: &str, digest: &Digest) -> Result<Option<u64>, RemoteError> {
        let repo = repository(repo)?;
        let url = self.endpoint(&format!("/v2/{repo}/blobs/{digest}"));
        let call = Call::new(Method::HEAD, url, pull_scopes(&repo));
        let describe = call.describe();
        let response = self.follow(call).await?;
        match response.status() {
            StatusCode::OK => content_length(&response, &describe).map(Some),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.failure(&describe, response).await),
        }
    }

    /// Asks the registry to link a blob it already has in `from` into `repo`. `true` when
    /// it did; `false` when it opened an upload session instead (the blob is not in `from`,
    /// or the registry does not mount), which is cancelled.
    pub async fn mount_blob(
        &self,
        repo: &str,
        digest: &Digest,
        from: &str,
    ) -> Result<bool, RemoteError> {
        let repo = repository(repo)?;
        let from = repository(from)?;
        let mut url = self.endpoint(&format!("/v2/{repo}/blobs/uploads/"));
        url.query_pairs_mut()
            .append_pair("mount", digest.as_str())
            .append_pair("from", from.as_str());
        let mut scopes = push_scopes(&repo);
        scopes.extend(pull_scopes(&from));
        let call =
            Call::new(Method::POST, url, scopes).header(CONTENT_LENGTH, HeaderValue::from(0));
        let describe = call.describe();
        let response = self.execute(call).await?;
        match response.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                if let Ok(location) = location(&response, &describe) {
                    self.cancel_upload(&location, &push_scopes(&repo)).await;
                }
                Ok(false)
            }
            _ => Err(self.failure(&describe, response).await),
        }
    }

    /// Uploads a blob of `size` bytes read from `body`, streaming it: one `PUT`, or `PATCH`
    /// chunks when the registry advertises `OCI-Chunk-Max-Length` or a chunk size was set.
    /// Returns the number of bytes sent.
    pub async fn push_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        body: ByteStream,
    ) -> Result<u64, RemoteError> {
        let repo = repository(repo)?;
        let scopes = push_scopes(&repo);
        let url = self.endpoint(&format!("/v2/{repo}/blobs/uploads/"));
        // The session opens without a body, so this is where authentication happens.
        let call = Call::new(Method::POST, url, scopes.clone())
            .header(CONTENT_LENGTH, HeaderValue::from(0));
        let describe = call.describe();
        let response = self.execute(call).await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(self.failure(&describe, response).await);
        }
        let session = location(&response, &describe)?;
        let chunk = chunk_length(
            self.chunk_size,
            header_number(response.headers(), OCI_CHUNK_MIN_LENGTH),
            header_number(response.headers(), OCI_CHUNK_MAX_LENGTH),
        );
        let source = Source::shared(body, size);
        let upload = Upload {
            scopes: &scopes,
            digest,
            size,
            source: &source,
        };
        let outcome = match chunk {
            Some(chunk) => self.upload_chunks(&upload, session.clone(), chunk).await,
            None => self.upload_whole(&upload, &session).await,
        };
        match outcome {
            Ok(()) => Ok(size),
            Err(error) => {
                self.cancel_upload(&session, &scopes).await;
                Err(error)
            }
        }
    }

    /// A blob's size and content. Redirects (to object storage, for instance) are followed
    /// without the registry's authorization. The caller verifies the digest.
    pub async fn blob(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<(u64, ByteStream), RemoteError> {
        let repo = repository(repo)?;
        let url = self.endpoint(&format!("/v2/{repo}/blobs/{digest}"));
        let mut call = Call::new(Method::GET, url, pull_scopes(&repo));
        call.timeout = None;
        let describe = call.describe();
        let response = self.follow(call).await?;
        if response.status() != StatusCode::OK {
            return Err(self.failure(&describe, response).await);
        }
        let size = content_length(&response, &describe)?;
        let host = host_of(response.url());
        let stream = response.bytes_stream().map_err(move |error| {
            io::Error::other(format!(
                "reading the blob from {host} failed: {}",
                innermost_cause(&error)
            ))
        });
        Ok((size, Box::pin(stream)))
    }

    /// Sends the whole blob in one streamed `PUT` that closes the session.
    async fn upload_whole(&self, upload: &Upload<'_>, session: &str) -> Result<(), RemoteError> {
        let url = self.closing_url(session, upload.digest)?;
        let body = Portion::body(upload.source, upload.size);
        let call = Call::new(Method::PUT, url, upload.scopes.to_vec()).stream(upload.size, body);
        let response = self.send_upload(call, upload.source).await?;
        self.check_blob_created(response, upload).await
    }

    /// Sends the blob in `PATCH` chunks of at most `chunk` bytes, then closes the session
    /// with a bodiless `PUT`.
    async fn upload_chunks(
        &self,
        upload: &Upload<'_>,
        mut session: String,
        chunk: u64,
    ) -> Result<(), RemoteError> {
        let mut offset = 0;
        while offset < upload.size {
            let length = chunk.min(upload.size - offset);
            let end = offset + length - 1;
            let url = join_location(&self.inner.base, &session, "the upload session")?;
            let range = HeaderValue::try_from(format!("{offset}-{end}"))
                .map_err(|e| RemoteError::Invalid(format!("a Content-Range header: {e}")))?;
            let body = Portion::body(upload.source, length);
            let call = Call::new(Method::PATCH, url, upload.scopes.to_vec())
                .stream(length, body)
                .header(CONTENT_RANGE, range);
            let describe = call.describe();
            let response = self.send_upload(call, upload.source).await?;
            if response.status() != StatusCode::ACCEPTED {
                return Err(self
                    .upload_failure(&describe, upload.scopes, response)
                    .await);
            }
            check_upload_range(response.headers(), end, &describe)?;
            if let Some(next) = response.headers().get(LOCATION) {
                session = header_text(next, &describe)?;
            }
            offset += length;
        }
        let url = self.closing_url(&session, upload.digest)?;
        let call = Call::new(Method::PUT, url, upload.scopes.to_vec())
            .header(CONTENT_LENGTH, HeaderValue::from(0));
        let response = self.execute(call).await?;
        self.check_blob_created(response, upload).await
    }

    /// Sends a request with a streamed body, failing it when it stalls (see [`stalled`]),
    /// and reporting a failure to read the content as such rather than as a network failure.
    async fn send_upload(
        &self,
        call: Call,
        source: &SharedSource,
    ) -> Result<Response, RemoteError> {
        let describe = call.describe();
        let host = host_of(&call.url);
        lock(source).progress = tokio::time::Instant::now();
        let outcome = tokio::select! {
            outcome = self.execute(call) => outcome,
            () = stalled(source) => Err(RemoteError::Unreachable(format!(
                "{describe} to {host} made no progress for {} s: the registry stopped taking \
                 the content or did not answer, or the content to upload stopped arriving",
                READ_TIMEOUT.as_secs()
            ))),
        };
        if let Some(failure) = lock(source).failure.take() {
            return Err(RemoteError::Io(failure));
        }
        outcome
    }

    /// The session's URL with `digest=` added to whatever query it has.
    fn closing_url(&self, session: &str, digest: &Digest) -> Result<Url, RemoteError> {
        let mut url = join_location(&self.inner.base, session, "the upload session")?;
        url.query_pairs_mut().append_pair("digest", digest.as_str());
        Ok(url)
    }

    /// Checks the answer that closes an upload: a success, for the digest we sent.
    async fn check_blob_created(
        &self,
        response: Response,
        upload: &Upload<'_>,
    ) -> Result<(), RemoteError> {
        let describe = format!("PUT {}", response.url().path());
        if !response.status().is_success() {
            return Err(self
                .upload_failure(&describe, upload.scopes, response)
                .await);
        }
        let sent = lock(upload.source).sent;
        if sent != upload.size {
            return Err(RemoteError::Io(format!(
                "only {sent} of the {} bytes of blob {} were sent",
                upload.size, upload.digest
            )));
        }
        match answered_digest(response.headers(), &describe)? {
            Some(answered) if answered != *upload.digest => Err(mismatch(
                &format!("blob upload ({describe})"),
                upload.digest,
                &answered,
            )),
            _ => Ok(()),
        }
    }

    /// A failed `PATCH` or `PUT` of an upload. A 401 there means the authorization that
    /// opened the session no longer works, and the body cannot be sent again.
    async fn upload_failure(
        &self,
        describe: &str,
        scopes: &[String],
        response: Response,
    ) -> RemoteError {
        if response.status() == StatusCode::UNAUTHORIZED {
            // The next upload must not try the same token.
            lock(&self.inner.auth).tokens.remove(&scope_key(scopes));
            return RemoteError::Unauthorized(format!(
                "{describe}: {} refused the authorization that opened the upload session \
                 (answered 401); the content cannot be sent again without it",
                self.url()
            ));
        }
        self.failure(describe, response).await
    }

    /// Cancels an upload session, ignoring any failure: it expires on its own anyway.
    async fn cancel_upload(&self, session: &str, scopes: &[String]) {
        let Ok(url) = join_location(&self.inner.base, session, "the upload session") else {
            return;
        };
        let call = Call::new(Method::DELETE, url, scopes.to_vec());
        if let Err(error) = self.execute(call).await {
            tracing::debug!(registry = %self.url(), %error, "cancelling an upload session failed");
        }
    }
}

/// What an upload needs at each step.
struct Upload<'a> {
    scopes: &'a [String],
    digest: &'a Digest,
    size: u64,
    source: &'a SharedSource,
}

/// How many bytes each `PATCH` carries, or `None` for a single `PUT`: the caller's size
/// or the registry's maximum, whichever is smaller, but no less than the registry's
/// minimum (the last chunk excepted, which is the caller's affair).
fn chunk_length(
    configured: Option<u64>,
    server_min: Option<u64>,
    server_max: Option<u64>,
) -> Option<u64> {
    let wanted = match (configured, server_max) {
        (None, None) => return None,
        (Some(configured), Some(max)) => configured.min(max),
        (Some(length), None) | (None, Some(length)) => length,
    };
    let mut length = wanted.max(server_min.unwrap_or(1));
    if let Some(max) = server_max {
        length = length.min(max);
    }
    Some(length.max(1))
}

/// Checks the `Range` after a chunk, when the registry sends one: it must have everything
/// up to `end`.
fn check_upload_range(headers: &HeaderMap, end: u64, describe: &str) -> Result<(), RemoteError> {
    let Some(range) = headers.get(RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let received = range
        .trim()
        .trim_start_matches("bytes=")
        .split_once('-')
        .and_then(|(_, last)| last.parse::<u64>().ok());
    match received {
        Some(last) if last == end => Ok(()),
        _ => Err(RemoteError::Protocol(format!(
            "{describe}: after a chunk ending at byte {end} the registry reports the range \
             {range:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use berth_core::Algorithm;

    use super::*;
    use crate::remote::RemoteConfig;

    #[test]
    fn locations_join_relative_absolute_and_with_a_query() {
        let base = Url::parse("https://r.example.com:5000/").expect("a URL");
        let join = |location: &str| {
            join_location(&base, location, "test")
                .expect("a valid location")
                .to_string()
        };
        assert_eq!(
            join("/v2/a/blobs/uploads/123"),
            "https://r.example.com:5000/v2/a/blobs/uploads/123"
        );
        assert_eq!(
            join("https://storage.example.net/upload/9?sig=x"),
            "https://storage.example.net/upload/9?sig=x"
        );
        assert!(join_location(&base, "ftp://x/y", "test").is_err());

        let digest = Digest::of(Algorithm::Sha256, b"x");
        let remote = RemoteRegistry::new(RemoteConfig {
            url: "https://r.example.com:5000".to_owned(),
            insecure: false,
            credential: None,
        })
        .expect("a valid URL");
        let closing = remote
            .closing_url("/v2/a/blobs/uploads/123?_state=abc%3D", &digest)
            .expect("a URL");
        assert_eq!(
            closing.as_str(),
            format!(
                "https://r.example.com:5000/v2/a/blobs/uploads/123?_state=abc%3D&digest=sha256%3A{}",
                digest.hex()
            )
        );
        let closing = remote
            .closing_url("https://other.example.com/up/1", &digest)
            .expect("a URL");
        assert_eq!(closing.host_str(), Some("other.example.com"));
        assert_eq!(
            closing.query(),
            Some(format!("digest=sha256%3A{}", digest.hex()).as_str())
        );
        assert!(
            !remote.is_registry(&closing),
            "no authorization goes to another host"
        );
    }

    #[test]
    fn chunk_lengths() {
        assert_eq!(chunk_length(None, None, None), None);
        assert_eq!(
            chunk_length(None, Some(5), None),
            None,
            "a minimum alone asks nothing"
        );
        assert_eq!(chunk_length(Some(100), None, None), Some(100));
        assert_eq!(chunk_length(None, None, Some(50)), Some(50));
        assert_eq!(chunk_length(Some(100), None, Some(50)), Some(50));
        assert_eq!(chunk_length(Some(10), Some(20), Some(50)), Some(20));
        assert_eq!(
            chunk_length(Some(10), Some(80), Some(50)),
            Some(50),
            "the maximum wins"
        );
        assert_eq!(chunk_length(Some(0), None, None), Some(1));
    }

    #[test]
    fn upload_ranges() {
        let mut headers = HeaderMap::new();
        assert!(
            check_upload_range(&headers, 9, "PATCH /x").is_ok(),
            "no Range is fine"
        );
        headers.insert(RANGE, HeaderValue::from_static("0-9"));
        assert!(check_upload_range(&headers, 9, "PATCH /x").is_ok());
        assert!(check_upload_range(&headers, 19, "PATCH /x").is_err());
        headers.insert(RANGE, HeaderValue::from_static("bytes=0-19"));
        assert!(check_upload_range(&headers, 19, "PATCH /x").is_ok());
    }
}
