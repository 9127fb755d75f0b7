//! The HTTP client replication uses to speak the OCI distribution protocol to a remote
//! registry: CNCF Distribution, Harbor, another Berth, or a registry modelled on them.
//!
//! Authentication follows what docker clients do, so any registry they work with works here:
//!
//! * a request first goes out with whatever this client already learnt (a cached bearer
//!   token for the request's scopes, or Basic credentials);
//! * a `401` names the scheme in `WWW-Authenticate`. For `Bearer`, a token is fetched from
//!   the challenge's realm with the configured credentials as Basic (anonymously without
//!   any), cached per scope set until shortly before it expires, and the request is sent
//!   again; for `Basic`, the request is sent again with the credentials.
//!
//! A streamed body cannot be sent twice, so uploads authorize on the bodiless `POST` that
//! opens the session and reuse that authorization for the `PATCH` and `PUT` carrying the
//! bytes. Credentials and tokens appear in no message, log line or `Debug` output.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
/// Re-exported: callers name these in every call.
pub use berth_core::Digest;
pub use berth_core::ports::ByteStream;
use berth_core::{Algorithm, Reference, RepositoryName};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, TryStreamExt};
use http::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LINK, LOCATION, RANGE,
    WWW_AUTHENTICATE,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use reqwest::{Response, Url};
use serde::Deserialize;

/// How long establishing a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole request without a streamed body may take, answer included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a streamed transfer may stall; it has no total deadline, as a large layer over
/// a slow link legitimately takes long. Downloads use reqwest's read timeout. Uploads
/// cannot: it runs from the start of the request until the answer, so it would cut off any
/// upload taking longer; [`stalled`] watches their progress instead.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long reading the body of an error answer may take, so a failure is reported even
/// when the registry stalls on it.
const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest manifest accepted, as Distribution and Berth limit them.
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// The largest page of tags or repositories read.
const MAX_LIST_BYTES: usize = 16 * 1024 * 1024;
/// The largest token answer read.
const MAX_TOKEN_BYTES: usize = 1024 * 1024;
/// How much of an error answer is read to report it.
const MAX_ERROR_BYTES: usize = 64 * 1024;
/// How many characters of a registry's error message are quoted in ours.
const MAX_QUOTED_CHARS: usize = 300;

/// Entries asked for per page of a listing.
const PAGE_SIZE: u32 = 1000;
/// A bound on pages followed, so a registry whose `Link` chain never ends cannot loop us.
const MAX_PAGES: usize = 100_000;
/// Redirects followed for one download.
const MAX_REDIRECTS: usize = 10;
/// A token's lifetime when its answer does not say (the token specification's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// The most a cached token is renewed before it expires, so it cannot expire in flight.
const TOKEN_RENEWAL_MARGIN: Duration = Duration::from_secs(30);

const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
const OCI_CHUNK_MIN_LENGTH: &str = "oci-chunk-min-length";
const OCI_CHUNK_MAX_LENGTH: &str = "oci-chunk-max-length";
const OCTET_STREAM: &str = "application/octet-stream";

/// Where a remote registry is and how to sign in to it.
#[derive(Clone)]
pub struct RemoteConfig {
    /// `http(s)://host[:port]`, without a path.
    pub url: String,
    /// Accept any TLS certificate (self-signed test registries).
    pub insecure: bool,
    /// Username and secret (password or robot token).
    pub credential: Option<(String, String)>,
}

impl fmt::Debug for RemoteConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteConfig")
            .field("url", &self.url)
            .field("insecure", &self.insecure)
            .field("username", &self.credential.as_ref().map(|(user, _)| user))
            .finish_non_exhaustive()
    }
}

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

/// What [`RemoteRegistry::ping`] found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    /// The registry answers the version check (`/v2/`).
    pub reachable: bool,
    /// The credentials were accepted, or none are needed.
    pub authenticated: bool,
    /// What happened, for a person.
    pub message: String,
}

/// A manifest as the remote registry stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

/// A client of one remote registry. Cloning is cheap and clones share connections and
/// cached tokens.
#[derive(Clone)]
pub struct RemoteRegistry {
    inner: Arc<Inner>,
    /// Upload in chunks of at most this many bytes even when the registry sets no limit.
    chunk_size: Option<u64>,
}

struct Inner {
    /// The origin, `scheme://host[:port]`.
    url: String,
    /// The same, parsed: requests are built on it and compared with it.
    base: Url,
    insecure: bool,
    /// For everything but streamed uploads.
    client: reqwest::Client,
    /// For streamed uploads: without a read timeout (see [`READ_TIMEOUT`]).
    uploads: reqwest::Client,
    credential: Option<Credential>,
    auth: Mutex<AuthState>,
}

struct Credential {
    username: String,
    secret: String,
}

impl fmt::Debug for RemoteRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteRegistry")
            .field("url", &self.inner.url)
            .field("insecure", &self.inner.insecure)
            .field(
                "username",
                &self.inner.credential.as_ref().map(|c| &c.username),
            )
            .field("chunk_size", &self.chunk_size)
            .finish_non_exhaustive()
    }
}

// ----- authentication state -----

/// What this client learnt from the registry's challenges. Remembering the scheme lets
/// later requests carry authorization from the start, which a streamed body needs.
#[derive(Default)]
struct AuthState {
    scheme: Option<Scheme>,
    /// Tokens by scope set (see [`scope_key`]).
    tokens: HashMap<String, CachedToken>,
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

struct CachedToken {
    /// The whole `Authorization` value, marked sensitive.
    header: HeaderValue,
    renew_at: Instant,
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scopes: Vec<String>,
        /// RFC 6750's `error`, e.g. `insufficient_scope`.
        error: Option<String>,
    },
}

/// The token endpoint's answer; registries use either name for the token.
#[derive(Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    /// Seconds; some services write it as a decimal.
    expires_in: Option<f64>,
}

// ----- requests -----

/// One request to send, possibly twice when the first answer asks for authentication.
struct Call {
    method: Method,
    url: Url,
    scopes: Vec<String>,
    headers: HeaderMap,
    payload: Payload,
    /// A whole-request deadline; `None` for streamed transfers.
    timeout: Option<Duration>,
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
    fn new(method: Method, url: Url, scopes: Vec<String>) -> Self {
        Self {
            method,
            url,
            scopes,
            headers: HeaderMap::new(),
            payload: Payload::Empty,
            timeout: Some(REQUEST_TIMEOUT),
        }
    }

    fn header(mut self, name: http::HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    fn bytes(mut self, content_type: HeaderValue, bytes: Bytes) -> Self {
        self.headers.insert(CONTENT_TYPE, content_type);
        self.payload = Payload::Bytes(bytes);
        self
    }

    /// A streamed body of exactly `length` bytes, without a total deadline.
    fn stream(mut self, length: u64, body: reqwest::Body) -> Self {
        self.headers
            .insert(CONTENT_TYPE, HeaderValue::from_static(OCTET_STREAM));
        self.headers
            .insert(CONTENT_LENGTH, HeaderValue::from(length));
        self.payload = Payload::Stream(Some(body));
        self.timeout = None;
        self
    }

    /// `METHOD /path`, without the query, which may carry upload state or signatures.
    fn describe(&self) -> String {
        format!("{} {}", self.method, self.url.path())
    }
}

// ----- scopes -----

fn pull_scopes(repo: &RepositoryName) -> Vec<String> {
    vec![format!("repository:{repo}:pull")]
}

fn push_scopes(repo: &RepositoryName) -> Vec<String> {
    vec![format!("repository:{repo}:pull,push")]
}

/// Deleting needs `delete` in Distribution and Berth; pull and push come along so that one
/// token serves the whole replication of a repository.
fn delete_scopes(repo: &RepositoryName) -> Vec<String> {
    vec![format!("repository:{repo}:delete,pull,push")]
}

const CATALOG_SCOPE: &str = "registry:catalog:*";

/// The cache key of a scope set: order and repetition do not matter.
fn scope_key(scopes: &[String]) -> String {
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
    /// A client of the registry at `config.url`, which must be `http(s)://host[:port]`.
    pub fn new(config: RemoteConfig) -> Result<Self, RemoteError> {
        let base = parse_registry_url(&config.url)?;
        let client = http_client(&config, Some(READ_TIMEOUT))?;
        let uploads = http_client(&config, None)?;
        let credential = config
            .credential
            .map(|(username, secret)| Credential { username, secret });
        Ok(Self {
            inner: Arc::new(Inner {
                url: base.origin().ascii_serialization(),
                base,
                insecure: config.insecure,
                client,
                uploads,
                credential,
                auth: Mutex::default(),
            }),
            chunk_size: None,
        })
    }

    /// Uploads in chunks of at most `bytes` (clamped to what the registry advertises), or,
    /// with `None`, only when the registry asks for chunks.
    pub fn with_chunk_size(mut self, bytes: Option<u64>) -> Self {
        self.chunk_size = bytes;
        self
    }

    /// The registry's origin, `scheme://host[:port]`.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    // ----- ping -----

    /// Checks that the registry answers `/v2/` and that the credentials work (fetching a
    /// token without scopes when the registry uses token auth). Never fails: a registry
    /// that is down or refuses the credentials is what the answer reports.
    pub async fn ping(&self) -> Ping {
        let url = self.endpoint("/v2/");
        let mut call = Call::new(Method::GET, url.clone(), Vec::new());
        let first = match self.send_once(&mut call, None).await {
            Ok(response) => response,
            Err(error) => return unreachable_ping(error),
        };
        match first.status() {
            status if status.is_success() => self.ping_open(),
            StatusCode::UNAUTHORIZED => match challenge_in(first.headers()) {
                Some(challenge) => self.ping_with(challenge, url).await,
                None => Ping {
                    reachable: true,
                    authenticated: false,
                    message: format!(
                        "{} answered 401 to GET /v2/ without a usable WWW-Authenticate \
                         challenge",
                        self.url()
                    ),
                },
            },
            _ => Ping {
                reachable: false,
                authenticated: false,
                message: format!(
                    "{} does not answer as a registry: {}",
                    self.url(),
                    summary("GET /v2/", first).await
                ),
            },
        }
    }

    fn ping_open(&self) -> Ping {
        let message = match &self.inner.credential {
            Some(_) => format!(
                "{} answers and needs no credentials for the version check",
                self.url()
            ),
            None => format!("{} answers without credentials", self.url()),
        };
        Ping {
            reachable: true,
            authenticated: true,
            message,
        }
    }

    /// Answers a challenge to the version check and tries again.
    async fn ping_with(&self, challenge: Challenge, url: Url) -> Ping {
        let refused = |message: String| Ping {
            reachable: true,
            authenticated: false,
            message,
        };
        if challenge == Challenge::Basic && self.inner.credential.is_none() {
            return refused(format!(
                "{} requires credentials and none are configured",
                self.url()
            ));
        }
        if let Err(error) = self.learn(&challenge, &[], false).await {
            return refused(error.to_string());
        }
        let authorization = match self.authorization(&[]).await {
            Ok(authorization) => authorization,
            Err(error) => return refused(error.to_string()),
        };
        let mut call = Call::new(Method::GET, url, Vec::new());
        match self.send_once(&mut call, authorization).await {
            Ok(response) if response.status().is_success() => Ping {
                reachable: true,
                authenticated: true,
                message: match &self.inner.credential {
                    Some(c) => format!(
                        "{} accepted the credentials of user {:?}",
                        self.url(),
                        c.username
                    ),
                    None => format!("{} allows anonymous access", self.url()),
                },
            },
            Ok(response) => refused(self.failure("GET /v2/", response).await.to_string()),
            Err(error) => refused(error.to_string()),
        }
    }

    // ----- blobs -----

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

    // ----- manifests -----

    /// A manifest's digest and media type, `None` when there is no such manifest.
    pub async fn manifest_head(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<(Digest, String)>, RemoteError> {
        let repo = repository(repo)?;
        let parsed = manifest_reference(reference)?;
        let url = self.endpoint(&format!("/v2/{repo}/manifests/{parsed}"));
        let call =
            Call::new(Method::HEAD, url, pull_scopes(&repo)).header(ACCEPT, manifest_accept());
        let describe = call.describe();
        let response = self.follow(call).await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(self.failure(&describe, response).await),
        }
        let media_type = media_type_header(response.headers());
        match (answered_digest(response.headers(), &describe)?, media_type) {
            (Some(digest), Some(media_type)) => Ok(Some((digest, media_type))),
            // Some registries leave the digest out of HEAD answers: the content tells.
            _ => Ok(self
                .manifest(repo.as_str(), reference)
                .await?
                .map(|manifest| (manifest.digest, manifest.media_type))),
        }
    }

    /// A manifest's bytes, verified against the digest it was asked by and the one the
    /// registry announced; `None` when there is no such manifest.
    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<RemoteManifest>, RemoteError> {
        let repo = repository(repo)?;
        let reference = manifest_reference(reference)?;
        let url = self.endpoint(&format!("/v2/{repo}/manifests/{reference}"));
        let call =
            Call::new(Method::GET, url, pull_scopes(&repo)).header(ACCEPT, manifest_accept());
        let describe = call.describe();
        let response = self.follow(call).await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(self.failure(&describe, response).await),
        }
        let announced = answered_digest(response.headers(), &describe)?;
        let content_type = media_type_header(response.headers());
        let bytes = read_body(response, MAX_MANIFEST_BYTES, &describe).await?;
        let what = manifest_name(&repo, &reference);
        let digest = verify_manifest(&what, &reference, announced.as_ref(), &bytes)?;
        let media_type = content_type
            .filter(|t| t != "application/json" && t != OCTET_STREAM)
            .or_else(|| media_type_field(&bytes))
            .ok_or_else(|| {
                RemoteError::Protocol(format!(
                    "{describe}: the registry answered a manifest without a media type"
                ))
            })?;
        Ok(Some(RemoteManifest {
            digest,
            media_type,
            bytes,
        }))
    }

    /// Stores a manifest under a tag or its digest; returns its digest.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Digest, RemoteError> {
        let repo = repository(repo)?;
        let reference = manifest_reference(reference)?;
        let content_type = HeaderValue::from_str(media_type).map_err(|_| {
            RemoteError::Invalid(format!("invalid manifest media type {media_type:?}"))
        })?;
        let url = self.endpoint(&format!("/v2/{repo}/manifests/{reference}"));
        let expected = match &reference {
            Reference::Digest(digest) => Digest::of(digest.algorithm(), &bytes),
            Reference::Tag(_) => Digest::of(Algorithm::Sha256, &bytes),
        };
        let what = manifest_name(&repo, &reference);
        if let Reference::Digest(asked) = &reference
            && *asked != expected
        {
            return Err(mismatch(&what, asked, &expected));
        }
        let call = Call::new(Method::PUT, url, push_scopes(&repo)).bytes(content_type, bytes);
        let describe = call.describe();
        let response = self.execute(call).await?;
        if !response.status().is_success() {
            return Err(self.failure(&describe, response).await);
        }
        match answered_digest(response.headers(), &describe)? {
            Some(answered) if answered.algorithm() == expected.algorithm() => {
                if answered != expected {
                    return Err(mismatch(&what, &expected, &answered));
                }
                Ok(answered)
            }
            _ => Ok(expected),
        }
    }

    /// Deletes a manifest; `false` when there was none.
    pub async fn delete_manifest(&self, repo: &str, reference: &str) -> Result<bool, RemoteError> {
        let repo = repository(repo)?;
        let reference = manifest_reference(reference)?;
        let url = self.endpoint(&format!("/v2/{repo}/manifests/{reference}"));
        let call = Call::new(Method::DELETE, url, delete_scopes(&repo));
        let describe = call.describe();
        let response = self.execute(call).await?;
        match response.status() {
            status if status.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.failure(&describe, response).await),
        }
    }

    // ----- listings -----

    /// Every tag of a repository, in the registry's order; empty when the repository is
    /// unknown.
    pub async fn tags(&self, repo: &str) -> Result<Vec<String>, RemoteError> {
        let repo = repository(repo)?;
        let url = self.endpoint(&format!("/v2/{repo}/tags/list"));
        self.list(url, pull_scopes(&repo), Listing::Tags).await
    }

    /// Every repository the registry lists in its catalog (those the credentials may see).
    pub async fn catalog(&self) -> Result<Vec<String>, RemoteError> {
        let url = self.endpoint("/v2/_catalog");
        self.list(url, vec![CATALOG_SCOPE.to_owned()], Listing::Catalog)
            .await
    }

    /// Fetches every page of a listing, following `Link: <..>; rel="next"`.
    async fn list(
        &self,
        mut url: Url,
        scopes: Vec<String>,
        listing: Listing,
    ) -> Result<Vec<String>, RemoteError> {
        url.query_pairs_mut()
            .append_pair("n", &PAGE_SIZE.to_string());
        let mut entries = Vec::new();
        for page in 0..MAX_PAGES {
            let call = Call::new(Method::GET, url.clone(), scopes.clone());
            let describe = call.describe();
            let response = self.execute(call).await?;
            match response.status() {
                StatusCode::OK => {}
                StatusCode::NOT_FOUND if page == 0 && listing == Listing::Tags => {
                    return Ok(Vec::new());
                }
                _ => return Err(self.failure(&describe, response).await),
            }
            let next = next_link(response.headers())
                .map(|link| join_location(&url, &link, &describe))
                .transpose()?;
            let body = read_body(response, MAX_LIST_BYTES, &describe).await?;
            entries.extend(listing.entries(&body, &describe)?);
            match next {
                Some(next) if next == url => {
                    return Err(RemoteError::Protocol(format!(
                        "{describe}: the registry's next page link points to the same page"
                    )));
                }
                Some(next) => url = next,
                None => return Ok(entries),
            }
        }
        Err(RemoteError::Protocol(format!(
            "{} lists more than {MAX_PAGES} pages: giving up",
            url.path()
        )))
    }

    // ----- uploads -----

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

    // ----- sending -----

    /// `path` on the registry.
    fn endpoint(&self, path: &str) -> Url {
        let mut url = self.inner.base.clone();
        url.set_path(path);
        url
    }

    /// Whether a URL is on the registry itself, the only place its authorization goes.
    fn is_registry(&self, url: &Url) -> bool {
        url.origin() == self.inner.base.origin()
    }

    /// Sends a request with what authorization is known; on a `401` whose challenge tells
    /// something new, authenticates and sends it again, unless its body was streamed.
    async fn execute(&self, mut call: Call) -> Result<Response, RemoteError> {
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
    async fn follow(&self, call: Call) -> Result<Response, RemoteError> {
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
    async fn send_once(
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

    // ----- authentication -----

    /// The `Authorization` for a request needing `scopes`, from what the registry asked
    /// for before: Basic credentials, or a bearer token (fetched now if none is cached).
    async fn authorization(&self, scopes: &[String]) -> Result<Option<HeaderValue>, RemoteError> {
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
    async fn learn(
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

    fn basic_header(&self) -> Option<HeaderValue> {
        let credential = self.inner.credential.as_ref()?;
        let encoded = STANDARD.encode(format!("{}:{}", credential.username, credential.secret));
        let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    // ----- failures -----

    /// The error for an answer the operation did not expect, quoting the registry's own
    /// OCI error if it sent one.
    async fn failure(&self, describe: &str, response: Response) -> RemoteError {
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

/// The two listings, by the JSON key holding their entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    Tags,
    Catalog,
}

impl Listing {
    fn entries(self, body: &[u8], describe: &str) -> Result<Vec<String>, RemoteError> {
        #[derive(Deserialize)]
        struct Page {
            tags: Option<Vec<String>>,
            repositories: Option<Vec<String>>,
        }
        let page: Page = serde_json::from_slice(body).map_err(|e| {
            RemoteError::Protocol(format!("{describe}: the listing is not valid JSON: {e}"))
        })?;
        // Distribution answers `"tags": null` for a repository without tags.
        Ok(match self {
            Self::Tags => page.tags,
            Self::Catalog => page.repositories,
        }
        .unwrap_or_default())
    }
}

/// What an upload needs at each step.
struct Upload<'a> {
    scopes: &'a [String],
    digest: &'a Digest,
    size: u64,
    source: &'a SharedSource,
}

// ----- streamed upload bodies -----

/// The content being uploaded, shared by the request bodies that carry it: each chunk's
/// body takes its share, and what it read beyond stays for the next.
struct Source {
    stream: ByteStream,
    /// Read from the stream but not yet sent.
    pending: Bytes,
    size: u64,
    sent: u64,
    /// When bytes last went out: the upload's sign of life.
    progress: tokio::time::Instant,
    /// Why reading the content failed, to report it as such.
    failure: Option<String>,
}

type SharedSource = Arc<Mutex<Source>>;

impl Source {
    fn shared(stream: ByteStream, size: u64) -> SharedSource {
        Arc::new(Mutex::new(Self {
            stream,
            pending: Bytes::new(),
            size,
            sent: 0,
            progress: tokio::time::Instant::now(),
            failure: None,
        }))
    }
}

/// A request body of the next `remaining` bytes of a [`Source`].
struct Portion {
    source: SharedSource,
    remaining: u64,
}

impl Portion {
    fn body(source: &SharedSource, length: u64) -> reqwest::Body {
        reqwest::Body::wrap_stream(Self {
            source: source.clone(),
            remaining: length,
        })
    }
}

impl Stream for Portion {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let mut source = lock(&this.source);
        loop {
            if !source.pending.is_empty() {
                let take = usize::try_from(this.remaining)
                    .unwrap_or(usize::MAX)
                    .min(source.pending.len());
                let piece = source.pending.split_to(take);
                this.remaining -= take as u64;
                source.sent += take as u64;
                source.progress = tokio::time::Instant::now();
                return Poll::Ready(Some(Ok(piece)));
            }
            match source.stream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(bytes))) => source.pending = bytes,
                Poll::Ready(Some(Err(error))) => {
                    source.failure = Some(format!("reading the blob to upload failed: {error}"));
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(None) => {
                    let message = format!(
                        "the blob to upload ended after {} of its {} bytes",
                        source.sent, source.size
                    );
                    source.failure = Some(message.clone());
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        message,
                    ))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Resolves once an upload has sent nothing for [`READ_TIMEOUT`]: the registry stopped
/// reading (its receive window stays full), it does not answer after the last byte, or the
/// content to upload stopped arriving.
async fn stalled(source: &SharedSource) {
    loop {
        let deadline = lock(source).progress + READ_TIMEOUT;
        if tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// Locks a mutex; a panic elsewhere while it was held leaves nothing half-updated here.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ----- pure helpers -----

/// An HTTP client for one registry. Redirects are followed by hand (see
/// [`RemoteRegistry::follow`]) so that credentials never leave the registry.
fn http_client(
    config: &RemoteConfig,
    read_timeout: Option<Duration>,
) -> Result<reqwest::Client, RemoteError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .tls_danger_accept_invalid_certs(config.insecure)
        .user_agent(concat!("berth-replication/", env!("CARGO_PKG_VERSION")));
    if let Some(timeout) = read_timeout {
        builder = builder.read_timeout(timeout);
    }
    builder.build().map_err(|e| {
        RemoteError::Invalid(format!(
            "cannot set up an HTTP client for {}: {}",
            config.url,
            innermost_cause(&e)
        ))
    })
}

/// Checks a registry URL: `http(s)://host[:port]`, nothing else.
fn parse_registry_url(text: &str) -> Result<Url, RemoteError> {
    let invalid = |why: &str| {
        RemoteError::Invalid(format!(
            "invalid registry URL {text:?}: {why}; expected http(s)://host[:port]"
        ))
    };
    let url = Url::parse(text.trim()).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials go in the credential, not in the URL"));
    }
    if url.path() != "/" {
        return Err(invalid("it must not have a path"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it must not have a query or fragment"));
    }
    Ok(url)
}

/// A repository name checked against the distribution grammar, so it is safe in a path.
fn repository(name: &str) -> Result<RepositoryName, RemoteError> {
    RepositoryName::from_str(name).map_err(|e| RemoteError::Invalid(e.message().to_owned()))
}

/// A tag or digest checked against the distribution grammar, so it is safe in a path.
fn manifest_reference(reference: &str) -> Result<Reference, RemoteError> {
    Reference::from_str(reference).map_err(|e| RemoteError::Invalid(e.message().to_owned()))
}

/// Resolves a `Location` (or `Link`) against the URL it was answered for: it may be a
/// path, or absolute on another host.
fn join_location(base: &Url, location: &str, context: &str) -> Result<Url, RemoteError> {
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

/// When to renew a token that lives `expires_in` seconds: shortly before it expires.
fn renewal_delay(expires_in: Option<f64>) -> Duration {
    let lifetime = expires_in
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
        .filter(|lifetime| *lifetime >= Duration::from_secs(1))
        .unwrap_or(DEFAULT_TOKEN_LIFETIME);
    lifetime - TOKEN_RENEWAL_MARGIN.min(lifetime / 4)
}

/// Every manifest and index media type replication copies, for `Accept`: without them a
/// registry may answer an older format or refuse.
fn manifest_accept() -> HeaderValue {
    HeaderValue::from_static(
        "application/vnd.oci.image.manifest.v1+json, \
         application/vnd.oci.image.index.v1+json, \
         application/vnd.docker.distribution.manifest.v2+json, \
         application/vnd.docker.distribution.manifest.list.v2+json, \
         application/vnd.docker.distribution.manifest.v1+prettyjws, \
         application/vnd.docker.distribution.manifest.v1+json",
    )
}

/// `repo:tag` or `repo@digest`, as people write them.
fn manifest_name(repo: &RepositoryName, reference: &Reference) -> String {
    match reference {
        Reference::Tag(tag) => format!("manifest {repo}:{tag}"),
        Reference::Digest(digest) => format!("manifest {repo}@{digest}"),
    }
}

fn mismatch(what: &str, expected: &Digest, actual: &Digest) -> RemoteError {
    RemoteError::DigestMismatch {
        what: what.to_owned(),
        expected: expected.to_string(),
        actual: actual.to_string(),
    }
}

/// Checks manifest bytes against the digest they were asked by and the one the registry
/// announced; returns the manifest's digest.
fn verify_manifest(
    what: &str,
    reference: &Reference,
    announced: Option<&Digest>,
    bytes: &[u8],
) -> Result<Digest, RemoteError> {
    let mut digest = None;
    if let Reference::Digest(asked) = reference {
        let actual = Digest::of(asked.algorithm(), bytes);
        if actual != *asked {
            return Err(mismatch(what, asked, &actual));
        }
        digest = Some(actual);
    }
    if let Some(announced) = announced {
        let actual = Digest::of(announced.algorithm(), bytes);
        if actual != *announced {
            return Err(mismatch(
                &format!("{what} (the digest the registry announced)"),
                announced,
                &actual,
            ));
        }
        digest = digest.or(Some(actual));
    }
    Ok(digest.unwrap_or_else(|| Digest::of(Algorithm::Sha256, bytes)))
}

/// The `mediaType` field of a manifest, for registries that answer no `Content-Type`.
fn media_type_field(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Typed {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<Typed>(bytes).ok()?.media_type
}

/// The `Content-Type` without parameters, if there is one.
fn media_type_header(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let media_type = value.split(';').next().unwrap_or_default().trim();
    (!media_type.is_empty()).then(|| media_type.to_owned())
}

/// The `Docker-Content-Digest` of an answer, if there is one.
fn answered_digest(headers: &HeaderMap, describe: &str) -> Result<Option<Digest>, RemoteError> {
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

fn header_text(value: &HeaderValue, describe: &str) -> Result<String, RemoteError> {
    value.to_str().map(str::to_owned).map_err(|_| {
        RemoteError::Protocol(format!(
            "{describe}: the registry answered a header that is not text"
        ))
    })
}

fn header_number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The `Content-Length` of an answer, which a blob answer must have.
fn content_length(response: &Response, describe: &str) -> Result<u64, RemoteError> {
    header_number(response.headers(), CONTENT_LENGTH.as_str()).ok_or_else(|| {
        RemoteError::Protocol(format!("{describe}: the answer has no Content-Length"))
    })
}

/// The `Location` of an answer, which opening an upload session must have.
fn location(response: &Response, describe: &str) -> Result<String, RemoteError> {
    let value = response.headers().get(LOCATION).ok_or_else(|| {
        RemoteError::Protocol(format!("{describe}: the registry answered no Location"))
    })?;
    header_text(value, describe)
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

/// Reads an answer's body, failing when it is larger than `limit`.
async fn read_body(response: Response, limit: usize, describe: &str) -> Result<Bytes, RemoteError> {
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
async fn summary(describe: &str, response: Response) -> String {
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
fn host_of(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// The error for a request that got no answer. The URL is left out but for its host and
/// path: a redirect target's query may hold a signature.
fn transport_error(method: &Method, url: &Url, error: &reqwest::Error) -> RemoteError {
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
fn innermost_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

fn unreachable_ping(error: RemoteError) -> Ping {
    Ping {
        reachable: false,
        authenticated: false,
        message: error.to_string(),
    }
}

// ----- header parsing -----

/// The challenge to answer among a `401`'s `WWW-Authenticate` headers: `Bearer` if offered
/// (it is the more precise), else `Basic`.
fn challenge_in(headers: &HeaderMap) -> Option<Challenge> {
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

/// The target of the `rel="next"` link among `Link` headers (RFC 8288), if there is one.
fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(parse_next_link)
}

fn parse_next_link(header: &str) -> Option<String> {
    let mut rest = header;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        let (target, after) = rest.strip_prefix('<')?.split_once('>')?;
        rest = after;
        let mut next = false;
        while let Some(param) = rest.trim_start().strip_prefix(';') {
            let (name, after_name) = take_token(param.trim_start());
            rest = after_name;
            let Some(value_text) = after_name.trim_start().strip_prefix('=') else {
                continue;
            };
            let (value, after_value) = take_value(value_text.trim_start())?;
            rest = after_value;
            if name.eq_ignore_ascii_case("rel")
                && value
                    .split_whitespace()
                    .any(|relation| relation.eq_ignore_ascii_case("next"))
            {
                next = true;
            }
        }
        if next {
            return Some(target.to_owned());
        }
    }
}

/// Splits a token (RFC 7230 `tchar`s) off the front of `text`.
fn take_token(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)))
        .unwrap_or(text.len());
    text.split_at(end)
}

/// Splits a parameter value, quoted or a token, off the front of `text`; `None` when a
/// quoted string does not end.
fn take_value(text: &str) -> Option<(String, &str)> {
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
    fn link_headers() {
        assert_eq!(
            parse_next_link(r#"</v2/_catalog?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/_catalog?last=b&n=2")
        );
        assert_eq!(
            parse_next_link("<https://r.example.com/v2/a/tags/list?n=1&last=x>;rel=next")
                .as_deref(),
            Some("https://r.example.com/v2/a/tags/list?n=1&last=x")
        );
        assert_eq!(
            parse_next_link(r#"</first>; rel="prev", </second>; title="a;b"; rel="next last""#)
                .as_deref(),
            Some("/second")
        );
        for none in [
            "",
            "garbage",
            r#"</x>; rel="prev""#,
            "</x>",
            "<unterminated; rel=next",
        ] {
            assert_eq!(parse_next_link(none), None, "{none:?}");
        }
    }

    #[test]
    fn registry_urls() {
        for good in [
            "http://127.0.0.1:5000",
            "https://registry.example.com",
            "https://registry.example.com/",
            "  https://r.example.com:8443  ",
        ] {
            assert!(parse_registry_url(good).is_ok(), "{good}");
        }
        for bad in [
            "registry.example.com",
            "ftp://registry.example.com",
            "https://registry.example.com/v2/",
            "https://registry.example.com/team",
            "https://registry.example.com?x=1",
            "https://registry.example.com#f",
            "https://user:pw@registry.example.com",
            "http://",
            "",
        ] {
            let error = parse_registry_url(bad).expect_err(bad);
            assert!(matches!(error, RemoteError::Invalid(_)), "{bad}: {error:?}");
            assert!(
                error.to_string().contains("http(s)://host[:port]"),
                "{error}"
            );
        }
        let remote = RemoteRegistry::new(RemoteConfig {
            url: "HTTPS://Registry.Example.com:443/".to_owned(),
            insecure: false,
            credential: None,
        })
        .expect("a valid URL");
        assert_eq!(remote.url(), "https://registry.example.com");
    }

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
    fn debug_shows_no_secret() {
        let config = RemoteConfig {
            url: "https://r.example.com".to_owned(),
            insecure: true,
            credential: Some(("robot$ci".to_owned(), "s3cr3t-value".to_owned())),
        };
        let config_text = format!("{config:?}");
        assert!(!config_text.contains("s3cr3t-value"), "{config_text}");
        assert!(config_text.contains("robot$ci"), "{config_text}");
        let remote = RemoteRegistry::new(config).expect("a valid config");
        let remote_text = format!("{remote:?}");
        assert!(!remote_text.contains("s3cr3t-value"), "{remote_text}");
        assert!(
            remote_text.contains("https://r.example.com"),
            "{remote_text}"
        );
        let header = remote.basic_header().expect("credentials");
        assert!(header.is_sensitive());
        assert!(
            !format!("{header:?}").contains("czNjcjN0"),
            "the header is redacted"
        );
    }

    #[test]
    fn names_and_references_are_checked() {
        assert!(repository("team/app").is_ok());
        for bad in ["Team/app", "a//b", "../etc", "a b", "a?b", "", "a/"] {
            assert!(
                matches!(repository(bad), Err(RemoteError::Invalid(_))),
                "{bad}"
            );
        }
        assert!(manifest_reference("v1.0").is_ok());
        assert!(manifest_reference(Digest::of(Algorithm::Sha256, b"").as_str()).is_ok());
        for bad in ["", "-x", "a/b", "sha256:zz", "v1?x", "a#b"] {
            assert!(
                matches!(manifest_reference(bad), Err(RemoteError::Invalid(_))),
                "{bad}"
            );
        }
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

    #[test]
    fn manifest_verification() {
        let bytes = br#"{"schemaVersion":2}"#;
        let digest = Digest::of(Algorithm::Sha256, bytes);
        let tag = manifest_reference("latest").expect("a tag");
        let by_digest = manifest_reference(digest.as_str()).expect("a digest");
        assert_eq!(verify_manifest("m", &tag, None, bytes).expect("ok"), digest);
        assert_eq!(
            verify_manifest("m", &by_digest, Some(&digest), bytes).expect("ok"),
            digest
        );
        let other = Digest::of(Algorithm::Sha256, b"other");
        let error = verify_manifest("m", &tag, Some(&other), bytes).expect_err("a mismatch");
        assert!(
            matches!(error, RemoteError::DigestMismatch { .. }),
            "{error}"
        );
        let asked = manifest_reference(other.as_str()).expect("a digest");
        assert!(verify_manifest("m", &asked, None, bytes).is_err());
        let sha512 = Digest::of(Algorithm::Sha512, bytes);
        assert_eq!(
            verify_manifest("m", &tag, Some(&sha512), bytes).expect("ok"),
            sha512
        );
    }

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

    #[tokio::test(start_paused = true)]
    async fn a_stalled_upload_is_noticed() {
        let source = Source::shared(Box::pin(futures_util::stream::pending()), 10);
        let watch = tokio::spawn({
            let source = source.clone();
            async move { stalled(&source).await }
        });
        tokio::time::sleep(READ_TIMEOUT - Duration::from_secs(1)).await;
        // Progress moves the deadline.
        lock(&source).progress = tokio::time::Instant::now();
        tokio::time::sleep(READ_TIMEOUT - Duration::from_secs(1)).await;
        assert!(!watch.is_finished(), "progress was made within the timeout");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(watch.is_finished(), "nothing for the whole timeout");
        watch.await.expect("the watch ends");
    }

    #[tokio::test]
    async fn portions_split_a_stream_across_bodies() {
        let pieces: Vec<io::Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"abcde")),
            Ok(Bytes::new()),
            Ok(Bytes::from_static(b"fghij")),
        ];
        let source = Source::shared(Box::pin(futures_util::stream::iter(pieces)), 12);
        let collect = |length| {
            let portion = Portion {
                source: source.clone(),
                remaining: length,
            };
            async move {
                portion
                    .try_fold(Vec::new(), |mut all, piece| async move {
                        all.extend_from_slice(&piece);
                        Ok(all)
                    })
                    .await
            }
        };
        assert_eq!(collect(3).await.expect("3 bytes"), b"abc");
        assert_eq!(collect(4).await.expect("4 bytes"), b"defg");
        let short = collect(5).await.expect_err("the content is short");
        assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof);
        let failure = lock(&source)
            .failure
            .clone()
            .expect("a failure is recorded");
        assert!(failure.contains("10 of its 12 bytes"), "{failure}");
    }
}
