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

mod auth;
mod blobs;
mod error;
mod listing;
mod manifests;
mod ping;
mod request;
mod response;
mod upload_body;

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Re-exported: callers name these in every call.
pub use berth_core::Digest;
pub use berth_core::ports::ByteStream;
use berth_core::{Reference, RepositoryName};
use reqwest::Url;

use self::auth::AuthState;
pub use self::error::RemoteError;
use self::error::innermost_cause;
pub use self::manifests::RemoteManifest;
pub use self::ping::Ping;

/// How long establishing a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole request without a streamed body may take, answer included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a streamed transfer may stall; it has no total deadline, as a large layer over
/// a slow link legitimately takes long. Downloads use reqwest's read timeout. Uploads
/// cannot: it runs from the start of the request until the answer, so it would cut off any
/// upload taking longer; [`upload_body::stalled`] watches their progress instead.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

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
}

/// Locks a mutex; a panic elsewhere while it was held leaves nothing half-updated here.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

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

#[cfg(test)]
mod tests {
    use berth_core::Algorithm;

    use super::*;

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
}
