//! The replication client (`berth_replication::remote`) against real registries: an
//! in-process Berth with token auth on, CNCF Distribution (`docker-registry`, started here
//! without auth), and a small fake registry that redirects blob downloads to another host.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use berth_replication::remote::{ByteStream, Digest, RemoteConfig, RemoteError, RemoteRegistry};
use berth_runtime::Routes;
use berth_runtime::Settings;
use berth_tests::authed::{ADMIN_PASSWORD, authed_parts, serve_on_loopback};
use berth_tests::distribution::{Distribution, free_port};
use berth_tests::{content, descriptor, media, sha256};
use bytes::Bytes;
use futures_util::TryStreamExt;
use serde_json::json;
use tempfile::TempDir;

const MIB: usize = 1024 * 1024;
/// A bit over 3 MiB, so that 1 MiB chunks leave a short last one.
const LAYER_LEN: usize = 3 * MIB + 12_345;

/// A Berth registry with token auth, served on a loopback port from this process.
struct Berth {
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
    _data_dir: TempDir,
}

impl Drop for Berth {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Berth {
    async fn start(settings: Settings) -> Self {
        let parts = authed_parts().await;
        let router = Routes::new()
            .registry(parts.stores.registry(), settings)
            .accounts(
                &parts.auth,
                parts.stores.accounts.clone(),
                parts.stores.metadata.clone(),
            )
            .build();
        let (addr, server) = serve_on_loopback(router).await;
        let data_dir = parts.data_dir;
        Self {
            addr,
            server,
            _data_dir: data_dir,
        }
    }

    fn remote(&self, credential: Option<(&str, &str)>) -> RemoteRegistry {
        remote(&format!("http://{}", self.addr), credential)
    }

    fn admin(&self) -> RemoteRegistry {
        self.remote(Some(("admin", ADMIN_PASSWORD)))
    }
}

fn remote(url: &str, credential: Option<(&str, &str)>) -> RemoteRegistry {
    RemoteRegistry::new(RemoteConfig {
        url: url.to_owned(),
        insecure: false,
        credential: credential.map(|(user, secret)| (user.to_owned(), secret.to_owned())),
    })
    .expect("a valid remote configuration")
}

fn digest_of(bytes: &[u8]) -> Digest {
    sha256(bytes).parse().expect("a valid digest")
}

/// `bytes` as a stream of 64 KiB pieces, as a blob store would hand them out.
fn stream_of(bytes: &[u8]) -> ByteStream {
    let pieces: Vec<std::io::Result<Bytes>> = bytes
        .chunks(64 * 1024)
        .map(|piece| Ok(Bytes::copy_from_slice(piece)))
        .collect();
    Box::pin(futures_util::stream::iter(pieces))
}

async fn read_all(stream: ByteStream) -> Vec<u8> {
    stream
        .try_fold(Vec::new(), |mut all, piece| async move {
            all.extend_from_slice(&piece);
            Ok(all)
        })
        .await
        .expect("the blob can be read")
}

/// Pushes `bytes` to `repo` and checks it reads back the same.
async fn push_and_read_back(remote: &RemoteRegistry, repo: &str, bytes: &[u8]) -> Digest {
    let digest = digest_of(bytes);
    let len = bytes.len() as u64;
    assert_eq!(
        remote.blob_size(repo, &digest).await.expect("HEAD works"),
        None,
        "{repo}: not there yet"
    );
    let sent = remote
        .push_blob(repo, &digest, len, stream_of(bytes))
        .await
        .unwrap_or_else(|e| panic!("pushing {len} bytes to {repo}: {e}"));
    assert_eq!(sent, len);
    assert_eq!(
        remote.blob_size(repo, &digest).await.expect("HEAD works"),
        Some(len)
    );
    let (size, stream) = remote.blob(repo, &digest).await.expect("the blob is there");
    assert_eq!(size, len);
    assert!(
        read_all(stream).await == bytes,
        "{repo}: the content reads back"
    );
    digest
}

/// Everything replication does, against one registry, in repositories under `project`.
async fn round_trip(remote: &RemoteRegistry, project: &str) {
    let repo = format!("{project}/app");
    let copy = format!("{project}/copy");

    // Blobs: streamed in one PUT, then in 1 MiB chunks; an empty one too.
    let layer = content(&format!("{project} layer"), LAYER_LEN);
    let layer_digest = push_and_read_back(remote, &repo, &layer).await;
    let chunked = remote.clone().with_chunk_size(Some(MIB as u64));
    let chunked_layer = content(&format!("{project} chunked layer"), LAYER_LEN);
    push_and_read_back(&chunked, &repo, &chunked_layer).await;
    push_and_read_back(remote, &repo, b"").await;
    let config = json!({"architecture": "amd64", "os": "linux", "project": project})
        .to_string()
        .into_bytes();
    let config_digest = push_and_read_back(remote, &repo, &config).await;

    // A blob of the wrong size or content is refused, and nothing is left of it.
    let wrong = remote
        .push_blob(&repo, &digest_of(b"other"), 5, stream_of(b"bytes"))
        .await
        .expect_err("a blob under someone else's digest");
    assert!(
        !wrong.to_string().is_empty() && !wrong.is_retryable(),
        "{wrong}"
    );
    let short = remote
        .push_blob(&repo, &digest_of(b"bytes"), 10, stream_of(b"bytes"))
        .await
        .expect_err("a blob shorter than announced");
    assert!(matches!(short, RemoteError::Io(_)), "{short:?}");

    // Mounting: from a repository that has the blob, and one that does not.
    assert!(
        remote
            .mount_blob(&copy, &layer_digest, &repo)
            .await
            .expect("the mount is answered"),
        "the layer is mounted"
    );
    assert_eq!(
        remote.blob_size(&copy, &layer_digest).await.expect("HEAD"),
        Some(LAYER_LEN as u64)
    );
    let absent = digest_of(b"never pushed");
    assert!(
        !remote
            .mount_blob(&copy, &absent, &repo)
            .await
            .expect("the mount is answered"),
        "nothing to mount"
    );
    let missing = remote
        .blob(&repo, &absent)
        .await
        .err()
        .expect("no such blob");
    assert!(matches!(missing, RemoteError::NotFound(_)), "{missing:?}");

    // Manifests.
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": descriptor(media::OCI_CONFIG, &config),
        "layers": [descriptor(media::OCI_LAYER, &layer)],
    })
    .to_string();
    let manifest = Bytes::from(manifest);
    assert_eq!(config_digest.as_str(), sha256(&config), "the config digest");
    let digest = remote
        .put_manifest(&repo, "v1", media::OCI_MANIFEST, manifest.clone())
        .await
        .expect("the manifest is stored");
    assert_eq!(digest, digest_of(&manifest));
    remote
        .put_manifest(&repo, "v2", media::OCI_MANIFEST, manifest.clone())
        .await
        .expect("a second tag");
    assert_eq!(
        remote.manifest_head(&repo, "v1").await.expect("HEAD"),
        Some((digest.clone(), media::OCI_MANIFEST.to_owned()))
    );
    for reference in ["v2", digest.as_str()] {
        let fetched = remote
            .manifest(&repo, reference)
            .await
            .expect("GET")
            .unwrap_or_else(|| panic!("{reference} is there"));
        assert_eq!(fetched.digest, digest);
        assert_eq!(fetched.media_type, media::OCI_MANIFEST);
        assert_eq!(fetched.bytes, manifest);
    }
    assert_eq!(
        remote.manifest_head(&repo, "nope").await.expect("HEAD"),
        None
    );
    assert_eq!(remote.manifest(&repo, "nope").await.expect("GET"), None);

    // Listings.
    let mut tags = remote.tags(&repo).await.expect("the tags");
    tags.sort();
    assert_eq!(tags, ["v1", "v2"]);
    assert_eq!(
        remote
            .tags(&format!("{project}/unknown"))
            .await
            .expect("an unknown repository has no tags"),
        Vec::<String>::new()
    );
    let catalog = remote.catalog().await.expect("the catalog");
    assert!(catalog.contains(&repo), "{catalog:?}");
    assert!(catalog.contains(&copy), "{catalog:?}");

    // Deleting, by digest (Distribution deletes no tags alone).
    assert!(
        remote
            .delete_manifest(&repo, digest.as_str())
            .await
            .expect("DELETE")
    );
    assert_eq!(
        remote
            .manifest_head(&repo, digest.as_str())
            .await
            .expect("HEAD"),
        None
    );
    assert!(
        !remote
            .delete_manifest(&repo, digest.as_str())
            .await
            .expect("DELETE again")
    );

    // Bad names never reach the registry.
    let invalid = remote
        .tags("../v2/_catalog")
        .await
        .expect_err("an invalid name");
    assert!(matches!(invalid, RemoteError::Invalid(_)), "{invalid:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_with_token_auth_round_trip() {
    let berth = Berth::start(Settings::default()).await;
    round_trip(&berth.admin(), "library").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_advertising_a_chunk_limit_gets_chunks() {
    // A body over 1 MiB is refused outright, so a successful push proves the chunks.
    let settings = Settings {
        chunk_max_length: Some(MIB as u64),
        max_body: Some(MIB as u64),
        ..Settings::default()
    };
    let berth = Berth::start(settings).await;
    let remote = berth.admin();
    let layer = content("advertised chunks", LAYER_LEN);
    push_and_read_back(&remote, "library/chunked", &layer).await;
    // The caller's smaller size wins over the advertised maximum.
    let small = remote.with_chunk_size(Some(300 * 1024));
    push_and_read_back(&small, "library/chunked", &content("small", MIB + 1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_reports_reachability_and_credentials() {
    let berth = Berth::start(Settings::default()).await;

    let good = berth.admin().ping().await;
    assert!(good.reachable && good.authenticated, "{good:?}");

    let wrong = berth
        .remote(Some(("admin", "not-the-password")))
        .ping()
        .await;
    assert!(wrong.reachable, "{wrong:?}");
    assert!(!wrong.authenticated, "{wrong:?}");
    assert!(wrong.message.contains("refused"), "{wrong:?}");
    assert!(wrong.message.contains("admin"), "{wrong:?}");
    assert!(!wrong.message.contains("not-the-password"), "{wrong:?}");

    // An anonymous token is a token: the version check passes without credentials.
    let anonymous = berth.remote(None).ping().await;
    assert!(
        anonymous.reachable && anonymous.authenticated,
        "{anonymous:?}"
    );

    let port = free_port();
    let closed = remote(&format!("http://127.0.0.1:{port}"), None)
        .ping()
        .await;
    assert_eq!(
        (closed.reachable, closed.authenticated),
        (false, false),
        "{closed:?}"
    );
    assert!(
        closed.message.contains(&format!("127.0.0.1:{port}")),
        "{closed:?}"
    );
    let error = remote(&format!("http://127.0.0.1:{port}"), None)
        .tags("library/app")
        .await
        .expect_err("nobody answers");
    assert!(
        matches!(error, RemoteError::Unreachable(_)) && error.is_retryable(),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_told_apart() {
    let berth = Berth::start(Settings::default()).await;
    let layer = content("refused", 1000);
    let digest = digest_of(&layer);

    let wrong = berth.remote(Some(("admin", "not-the-password")));
    let error = wrong
        .tags("library/app")
        .await
        .expect_err("wrong credentials");
    assert!(matches!(error, RemoteError::Unauthorized(_)), "{error:?}");
    assert!(error.to_string().contains("refused"), "{error}");
    assert!(!error.to_string().contains("not-the-password"), "{error}");

    // The public project may be read anonymously, not written.
    let anonymous = berth.remote(None);
    assert_eq!(
        anonymous.tags("library/app").await.expect("a public read"),
        Vec::<String>::new()
    );
    let error = anonymous
        .push_blob("library/app", &digest, 1000, stream_of(&layer))
        .await
        .expect_err("an anonymous push");
    assert!(matches!(error, RemoteError::Unauthorized(_)), "{error:?}");
    assert!(
        error.to_string().contains("requires credentials"),
        "{error}"
    );
    // Valid credentials without the right: the public project is read-only to a stranger.
    let created = reqwest::Client::new()
        .post(format!("http://{}/api/v2.0/users", berth.addr))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .json(&json!({"username": "stranger", "password": "Stranger-pw-1"}))
        .send()
        .await
        .expect("the API answers");
    assert!(created.status().is_success(), "{}", created.status());
    let stranger = berth.remote(Some(("stranger", "Stranger-pw-1")));
    assert!(stranger.ping().await.authenticated);
    let error = stranger
        .push_blob("library/app", &digest, 1000, stream_of(&layer))
        .await
        .expect_err("a push without the right");
    assert!(matches!(error, RemoteError::Denied(_)), "{error:?}");
    assert!(error.to_string().contains("stranger"), "{error}");

    let error = anonymous.catalog().await.expect_err("an anonymous catalog");
    assert!(
        matches!(error, RemoteError::Unauthorized(_) | RemoteError::Denied(_)),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distribution_round_trip() {
    let distribution = Distribution::start().await;
    let remote = remote(&distribution.url, None);
    let ping = remote.ping().await;
    assert!(ping.reachable && ping.authenticated, "{ping:?}");
    round_trip(&remote, "team").await;
}

// ----- redirects -----

/// What the storage behind a redirect saw.
#[derive(Default)]
struct Seen {
    authorization: Vec<Option<String>>,
}

/// A registry with Basic auth that redirects blob downloads to a storage server on another
/// host, like a registry on S3 with presigned URLs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirected_downloads_do_not_carry_the_registry_credentials() {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;

    let blob = content("redirected", 5000);
    let digest = digest_of(&blob);
    let seen = Arc::new(Mutex::new(Seen::default()));

    let storage_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let storage_port = storage_listener.local_addr().expect("an address").port();
    let storage = {
        let seen = seen.clone();
        let blob = blob.clone();
        axum::Router::new().route(
            "/bucket/blob",
            get(move |headers: HeaderMap| async move {
                let authorization = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                seen.lock()
                    .expect("the record")
                    .authorization
                    .push(authorization);
                blob.clone()
            }),
        )
    };
    tokio::spawn(async move {
        axum::serve(storage_listener, storage)
            .await
            .expect("the storage runs")
    });

    let expected = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "user:pw")
    );
    let registry = {
        let location = format!("http://localhost:{storage_port}/bucket/blob?X-Signature=s");
        let expected = expected.clone();
        axum::Router::new().fallback(move |headers: HeaderMap| async move {
            let authorized = headers
                .get(header::AUTHORIZATION)
                .is_some_and(|v| v.as_bytes() == expected.as_bytes());
            if !authorized {
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Basic realm=\"fake\"".to_owned())],
                )
                    .into_response();
            }
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, location.clone())],
            )
                .into_response()
        })
    };
    let registry_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let registry_addr = registry_listener.local_addr().expect("an address");
    tokio::spawn(async move {
        axum::serve(registry_listener, registry)
            .await
            .expect("the registry runs")
    });

    let remote = remote(&format!("http://{registry_addr}"), Some(("user", "pw")));
    let (size, stream) = remote
        .blob("team/app", &digest)
        .await
        .expect("the redirect is followed");
    assert_eq!(size, blob.len() as u64);
    assert!(read_all(stream).await == blob, "the blob arrives");
    let seen = seen.lock().expect("the record");
    assert_eq!(
        seen.authorization,
        [None],
        "the storage got no Authorization"
    );
}
