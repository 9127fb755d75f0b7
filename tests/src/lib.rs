//! The protocol test harness: a real Berth registry served over HTTP on a loopback port, on a
//! fresh data directory, and a client that speaks the OCI distribution API to it.
//!
//! Every test starts its own [`TestRegistry`], so tests share nothing and may run in any
//! order. Requests go through a real HTTP client (reqwest) and, where a path must reach the
//! server exactly as written (`..`, raw bytes) or a body must be sent in a precise way,
//! through [`RawConnection`], a plain TCP socket.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use berth_runtime::StorageConfig;
use bytes::Bytes;
pub use reqwest::Method;
use reqwest::header::{
    CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue,
};
use serde_json::{Value, json};
use sha2::Digest as _;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod authed;
pub mod aws;
pub mod distribution;

/// Media types the tests push and expect back.
pub mod media {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_NONDISTRIBUTABLE: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_FOREIGN_LAYER: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
}

/// The `sha256:<hex>` digest of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(bytes).as_slice())
    )
}

/// The `sha512:<hex>` digest of `bytes`.
pub fn sha512(bytes: &[u8]) -> String {
    format!(
        "sha512:{}",
        hex::encode(sha2::Sha512::digest(bytes).as_slice())
    )
}

/// `len` bytes of deterministic, non-repeating-looking content derived from `seed`.
pub fn content(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut block = sha2::Sha256::digest(seed.as_bytes());
    while out.len() < len {
        out.extend_from_slice(block.as_slice());
        block = sha2::Sha256::digest(block.as_slice());
    }
    out.truncate(len);
    out
}

/// Appends `query` to a URL or path that may already carry a query string.
pub fn with_query(location: &str, query: &str) -> String {
    let separator = if location.contains('?') { '&' } else { '?' };
    format!("{location}{separator}{query}")
}

/// A running registry on `127.0.0.1:<ephemeral port>` over its own temporary data directory.
/// Dropping it stops the server and removes the directory.
#[derive(Debug)]
pub struct TestRegistry {
    addr: SocketAddr,
    client: reqwest::Client,
    server: Option<RunningServer>,
    receive_buffer: Option<u32>,
    storage: StorageConfig,
    /// Holds the data directory for as long as the registry runs.
    data_dir: TempDir,
}

#[derive(Debug)]
struct RunningServer {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.task.abort();
        }
    }
}

impl TestRegistry {
    /// Starts a registry with default socket settings.
    pub async fn start() -> Self {
        Self::start_with_receive_buffer(None).await
    }

    /// Starts a registry whose accepted connections have a fixed, small kernel receive
    /// buffer, so that a client can tell from its own writes how much of a request body the
    /// server has consumed.
    pub async fn start_with_small_receive_buffer() -> Self {
        Self::start_with_receive_buffer(Some(SMALL_SOCKET_BUFFER)).await
    }

    async fn start_with_receive_buffer(receive_buffer: Option<u32>) -> Self {
        let data_dir = tempfile::tempdir().expect("a temporary data directory");
        let storage = StorageConfig::local(data_dir.path());
        let (addr, server) = serve(&storage, receive_buffer).await;
        Self {
            addr,
            client: http_client(),
            server: Some(server),
            receive_buffer,
            storage,
            data_dir,
        }
    }

    /// Starts a registry on embedded storage and hands back its stores, for tests that work
    /// on them beside the registry (garbage collection). It cannot [`Self::restart`]: the
    /// caller holds the database.
    pub async fn start_with_stores() -> (Self, berth_runtime::Stores) {
        Self::start_with_stores_on(None).await
    }

    /// [`Self::start_with_stores`] on the given storage (for example S3 and DynamoDB), or
    /// on embedded storage.
    pub async fn start_with_stores_on(
        storage: Option<StorageConfig>,
    ) -> (Self, berth_runtime::Stores) {
        let data_dir = tempfile::tempdir().expect("a temporary data directory");
        let mut storage = storage.unwrap_or_else(|| StorageConfig::local(data_dir.path()));
        storage.data_dir = data_dir.path().to_owned();
        let stores = storage.open_stores().await.expect("the storage opens");
        let router = berth_runtime::Routes::new()
            .registry(stores.registry(), berth_runtime::Settings::default())
            .build();
        let (addr, server) = serve_router(router, None).await;
        let registry = Self {
            addr,
            client: http_client(),
            server: Some(server),
            receive_buffer: None,
            storage,
            data_dir,
        };
        (registry, stores)
    }

    /// The data directory of embedded storage.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.path()
    }

    /// Starts a registry on the given storage (for example S3 and DynamoDB), which must be
    /// ready for use. Its own temporary directory serves any part that is local.
    pub async fn start_on(mut storage: StorageConfig) -> Self {
        let data_dir = tempfile::tempdir().expect("a temporary data directory");
        storage.data_dir = data_dir.path().to_owned();
        let (addr, server) = serve(&storage, None).await;
        Self {
            addr,
            client: http_client(),
            server: Some(server),
            receive_buffer: None,
            storage,
            data_dir,
        }
    }

    /// Stops the server gracefully, letting go of its storage, and starts a new one on the
    /// same data directory (on a new port).
    pub async fn restart(&mut self) {
        // Dropping the client closes its pooled connections, so the shutdown need not wait.
        self.client = http_client();
        if let Some(server) = self.server.take() {
            let _ = server.shutdown.send(());
            tokio::time::timeout(Duration::from_secs(10), server.task)
                .await
                .expect("the server stops within 10 s")
                .expect("the server task ends cleanly");
        }
        let (addr, server) = serve(&self.storage, self.receive_buffer).await;
        self.addr = addr;
        self.server = Some(server);
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// An absolute URL for a path (`/v2/...`) or for a `Location` the server returned, which
    /// may be a path or already absolute.
    pub fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_owned()
        } else {
            format!("http://{}{path_or_url}", self.addr)
        }
    }

    /// A request builder for anything the helpers below do not cover.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// Sends a request and collects the whole reply.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request
            .send()
            .await
            .expect("the request reaches the registry");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .expect("the response body can be read");
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn call(&self, method: Method, path: &str) -> Reply {
        self.send(self.request(method, path)).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path).await
    }

    pub async fn head(&self, path: &str) -> Reply {
        self.call(Method::HEAD, path).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path).await
    }

    pub async fn get_with_range(&self, path: &str, range: &str) -> Reply {
        self.send(self.request(Method::GET, path).header("Range", range))
            .await
    }

    // ----- uploads -----

    /// `POST /v2/<repo>/blobs/uploads/`.
    pub async fn start_upload(&self, repo: &str) -> Reply {
        self.call(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .await
    }

    /// Opens an upload session and returns its `Location`, asserting the 202.
    pub async fn open_session(&self, repo: &str) -> String {
        let reply = self.start_upload(repo).await;
        reply.assert_status(202);
        reply.location()
    }

    /// `POST /v2/<repo>/blobs/uploads/?digest=<digest>` with `bytes` as the body.
    pub async fn post_monolithic(&self, repo: &str, digest: &str, bytes: &[u8]) -> Reply {
        let path = format!("/v2/{repo}/blobs/uploads/?digest={digest}");
        self.send(
            self.request(Method::POST, &path)
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(bytes.to_vec()),
        )
        .await
    }

    /// Pushes a blob in one request and returns its sha256 digest, asserting the 201.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        self.post_monolithic(repo, &digest, bytes)
            .await
            .assert_status(201);
        digest
    }

    /// `PATCH <location>` with a `Content-Range` for `bytes` placed at `start`.
    pub async fn patch_chunk(&self, location: &str, start: u64, bytes: &[u8]) -> Reply {
        self.patch_with_range(location, &chunk_range(start, bytes.len()), bytes)
            .await
    }

    /// `PATCH <location>` with the given `Content-Range` header, whatever it says.
    pub async fn patch_with_range(&self, location: &str, range: &str, bytes: &[u8]) -> Reply {
        self.send(
            self.request(Method::PATCH, location)
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_RANGE, range)
                .body(bytes.to_vec()),
        )
        .await
    }

    /// `PATCH <location>` with a streamed body of unknown length (chunked transfer
    /// encoding) and no `Content-Range`.
    pub async fn patch_streamed(&self, location: &str, chunks: Vec<Vec<u8>>) -> Reply {
        let stream = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
        self.send(
            self.request(Method::PATCH, location)
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(reqwest::Body::wrap_stream(stream)),
        )
        .await
    }

    /// `PUT <location>?digest=<digest>` with no body.
    pub async fn close_upload(&self, location: &str, digest: &str) -> Reply {
        let url = with_query(location, &format!("digest={digest}"));
        self.call(Method::PUT, &url).await
    }

    /// `PUT <location>?digest=<digest>` with `bytes` as the last chunk (no `Content-Range`).
    pub async fn close_upload_with(&self, location: &str, digest: &str, bytes: &[u8]) -> Reply {
        let url = with_query(location, &format!("digest={digest}"));
        self.send(
            self.request(Method::PUT, &url)
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(bytes.to_vec()),
        )
        .await
    }

    /// `PUT <location>?digest=<digest>` with `bytes` as the last chunk at `start`.
    pub async fn close_upload_with_chunk(
        &self,
        location: &str,
        digest: &str,
        start: u64,
        bytes: &[u8],
    ) -> Reply {
        let url = with_query(location, &format!("digest={digest}"));
        self.send(
            self.request(Method::PUT, &url)
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_RANGE, chunk_range(start, bytes.len()))
                .body(bytes.to_vec()),
        )
        .await
    }

    // ----- manifests -----

    /// `PUT /v2/<repo>/manifests/<reference>` with the exact `bytes` and `Content-Type`
    /// (none when `content_type` is `None`).
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        content_type: Option<&str>,
        bytes: &[u8],
    ) -> Reply {
        let mut request = self
            .request(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .body(bytes.to_vec());
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        self.send(request).await
    }

    /// Pushes the blobs of `image`, then its manifest under `reference`; asserts the 201s
    /// and returns the manifest's digest.
    pub async fn push_image(&self, repo: &str, reference: &str, image: &Image) -> String {
        self.push_blob(repo, &image.config).await;
        for layer in &image.layers {
            self.push_blob(repo, layer).await;
        }
        let reply = self
            .put_manifest(repo, reference, Some(&image.media_type), &image.manifest)
            .await;
        reply.assert_status(201);
        let digest = image.digest();
        assert_eq!(reply.header("docker-content-digest"), Some(digest.as_str()));
        digest
    }

    /// Pushes a fresh single-layer OCI image whose content derives from `seed`.
    pub async fn push_seeded_image(&self, repo: &str, reference: &str, seed: &str) -> Image {
        let image = Image::oci(seed);
        self.push_image(repo, reference, &image).await;
        image
    }

    /// Fetches every page of a listing, following `Link` headers from `first`, and returns
    /// the pages' entries under `key` in order, asserting each page is a 200.
    pub async fn follow_pages(&self, first: &str, key: &str) -> Vec<Vec<String>> {
        let mut pages = Vec::new();
        let mut next = Some(first.to_owned());
        while let Some(path) = next {
            assert!(pages.len() < 1_000, "the Link chain does not end");
            let reply = self.get(&path).await;
            reply.assert_status(200);
            pages.push(reply.string_list(key));
            next = reply.next_link();
        }
        pages
    }

    // ----- raw HTTP -----

    /// Opens a plain TCP connection to the registry.
    pub async fn connect_raw(&self) -> RawConnection {
        RawConnection::connect(self.addr, None).await
    }

    /// Opens a plain TCP connection with a small, fixed kernel send buffer.
    pub async fn connect_raw_small_send_buffer(&self) -> RawConnection {
        RawConnection::connect(self.addr, Some(SMALL_SOCKET_BUFFER)).await
    }

    /// Sends one request exactly as written (path not normalised, no added headers except
    /// `Host`, `Connection: close` and, for a body or a method that takes one,
    /// `Content-Length`).
    pub async fn raw(&self, method: &str, path: &str, body: &[u8]) -> Reply {
        let mut connection = self.connect_raw().await;
        let mut head = request_head(method, path, self.addr);
        if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
            let _ = write!(head, "Content-Length: {}\r\n", body.len());
        }
        head.push_str("\r\n");
        // One write, so the whole request is in flight before the server may answer early.
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        connection.send(&request).await;
        connection.read_response(method == "HEAD").await
    }
}

/// Opens local storage in `data_dir` and serves the local router on an ephemeral loopback
/// port until told to shut down.
async fn serve(
    storage: &StorageConfig,
    receive_buffer: Option<u32>,
) -> (SocketAddr, RunningServer) {
    let registry = storage.open().await.expect("the storage opens");
    let router = berth_runtime::Routes::new()
        .registry(registry, berth_runtime::Settings::default())
        .build();
    serve_router(router, receive_buffer).await
}

async fn serve_router(
    router: axum::Router,
    receive_buffer: Option<u32>,
) -> (SocketAddr, RunningServer) {
    let socket = TcpSocket::new_v4().expect("a TCP socket");
    if let Some(size) = receive_buffer {
        socket
            .set_recv_buffer_size(size)
            .expect("the receive buffer size can be set");
    }
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind to an ephemeral loopback port");
    let listener = socket.listen(128).expect("listen");
    let addr = listener.local_addr().expect("the listener has an address");
    let (shutdown, stop) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stop.await;
            })
            .await
            .expect("the server runs");
    });
    (addr, RunningServer { shutdown, task })
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// Kernel socket buffer size for tests that reason about how far a body has been read.
const SMALL_SOCKET_BUFFER: u32 = 8 * 1024;

/// The `Content-Range` of an upload chunk of `len` bytes starting at `start`.
pub fn chunk_range(start: u64, len: usize) -> String {
    format!("{start}-{}", start + len as u64 - 1)
}

/// The start of an HTTP/1.1 request: request line, `Host` and `Connection: close`.
pub fn request_head(method: &str, path: &str, addr: SocketAddr) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n")
}

/// One body chunk in HTTP/1.1 chunked transfer encoding.
pub fn encode_chunk(bytes: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
    out
}

/// The end of a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A plain TCP connection for requests that must reach the server byte for byte.
#[derive(Debug)]
pub struct RawConnection {
    stream: TcpStream,
}

impl RawConnection {
    async fn connect(addr: SocketAddr, send_buffer: Option<u32>) -> Self {
        let socket = TcpSocket::new_v4().expect("a TCP socket");
        if let Some(size) = send_buffer {
            socket
                .set_send_buffer_size(size)
                .expect("the send buffer size can be set");
        }
        let stream = socket.connect(addr).await.expect("connect to the registry");
        Self { stream }
    }

    /// Writes bytes; returns once the kernel has taken all of them.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("the registry accepts the bytes");
    }

    /// Reads one response to the end of the connection (requests carry
    /// `Connection: close`).
    pub async fn read_response(mut self, head_request: bool) -> Reply {
        let mut raw = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), self.stream.read_to_end(&mut raw))
            .await
            .expect("the registry answers in time");
        // A server that answers before reading the whole body may reset the connection
        // after its answer; what arrived before the reset is the answer.
        if let Err(error) = read {
            assert!(
                error.kind() == std::io::ErrorKind::ConnectionReset && !raw.is_empty(),
                "the response can be read: {error}"
            );
        }
        parse_response(&raw, head_request)
    }

    /// Splits the connection for several requests in a row (HTTP keep-alive): the write
    /// half sends them, [`RawResponses`] reads the answers one by one.
    pub fn keep_alive(self) -> (tokio::net::tcp::OwnedWriteHalf, RawResponses) {
        let (reader, writer) = self.stream.into_split();
        (
            writer,
            RawResponses {
                reader,
                buffered: Vec::new(),
            },
        )
    }

    /// Writes `rest` of a request while reading the response, for a server that may answer
    /// before it has read everything. Errors writing are ignored: the answer is what counts.
    pub async fn finish_while_reading(self, rest: Vec<u8>) -> Reply {
        let (mut reader, mut writer) = self.stream.into_split();
        let write = tokio::spawn(async move {
            let _ = writer.write_all(&rest).await;
            writer
        });
        let mut raw = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), reader.read_to_end(&mut raw))
            .await
            .expect("the registry answers in time");
        if let Err(error) = read {
            assert!(
                error.kind() == std::io::ErrorKind::ConnectionReset && !raw.is_empty(),
                "the response can be read: {error}"
            );
        }
        write.abort();
        parse_response(&raw, false)
    }
}

/// The responses arriving on a kept-alive raw connection, read one at a time.
#[derive(Debug)]
pub struct RawResponses {
    reader: tokio::net::tcp::OwnedReadHalf,
    buffered: Vec<u8>,
}

impl RawResponses {
    /// The next whole response (its body delimited by `Content-Length`), or why there is
    /// none: the connection ended or failed first.
    pub async fn next(&mut self) -> Result<Reply, String> {
        loop {
            if let Some(end) = self.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = parse_response(&self.buffered[..end + 4], true);
                let length: usize = head
                    .header("content-length")
                    .map_or(0, |l| l.parse().expect("Content-Length is a number"));
                if self.buffered.len() >= end + 4 + length {
                    let rest = self.buffered.split_off(end + 4 + length);
                    let raw = std::mem::replace(&mut self.buffered, rest);
                    return Ok(parse_response(&raw, false));
                }
            }
            let mut chunk = [0; 16 * 1024];
            let read = tokio::time::timeout(Duration::from_secs(30), self.reader.read(&mut chunk))
                .await
                .map_err(|_| "no response within 30 s".to_owned())?;
            match read {
                Ok(0) => return Err("the server closed the connection".to_owned()),
                Ok(n) => self.buffered.extend_from_slice(&chunk[..n]),
                Err(error) => return Err(format!("the connection failed: {error}")),
            }
        }
    }
}

fn parse_response(raw: &[u8], head_request: bool) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..split]).expect("the response head is text");
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("a status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').expect("a header line");
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes()).expect("a header name"),
            HeaderValue::from_str(value.trim()).expect("a header value"),
        );
    }
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    let body = if head_request {
        Vec::new()
    } else if chunked {
        decode_chunked(rest)
    } else if let Some(length) = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        rest[..length.min(rest.len())].to_vec()
    } else {
        rest.to_vec()
    };
    Reply {
        status,
        headers,
        body: Bytes::from(body),
    }
}

fn decode_chunked(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return body;
        };
        let size_text = std::str::from_utf8(&rest[..end]).unwrap_or("0");
        let size_text = size_text.split(';').next().unwrap_or("0").trim();
        let size = usize::from_str_radix(size_text, 16).unwrap_or(0);
        if size == 0 {
            return body;
        }
        let start = end + 2;
        let stop = (start + size).min(rest.len());
        body.extend_from_slice(&rest[start..stop]);
        rest = rest.get(stop + 2..).unwrap_or(&[]);
    }
}

/// A whole response: status, headers and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// A header's value as text; `None` when absent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| {
            value
                .to_str()
                .unwrap_or_else(|_| panic!("header {name} is not text"))
        })
    }

    /// A header that must be present.
    pub fn required_header(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name} header in {self}"))
    }

    /// The `Location` header.
    pub fn location(&self) -> String {
        self.required_header("location").to_owned()
    }

    /// The `Content-Length` header as a number.
    pub fn content_length(&self) -> u64 {
        self.required_header("content-length")
            .parse()
            .expect("Content-Length is a number")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {self}"))
    }

    /// The strings in a JSON array at `key` of the body (`tags`, `repositories`).
    pub fn string_list(&self, key: &str) -> Vec<String> {
        let value = self.json();
        let list = value[key]
            .as_array()
            .unwrap_or_else(|| panic!("no array {key} in {value}"));
        list.iter()
            .map(|entry| entry.as_str().expect("a string entry").to_owned())
            .collect()
    }

    /// The target of a `Link: <...>; rel="next"` header, if there is one.
    pub fn next_link(&self) -> Option<String> {
        let link = self.header("link")?;
        let (target, params) = link
            .split_once(';')
            .unwrap_or_else(|| panic!("Link without parameters: {link:?}"));
        assert_eq!(params.trim(), "rel=\"next\"", "Link relation in {link:?}");
        let target = target
            .trim()
            .strip_prefix('<')
            .and_then(|t| t.strip_suffix('>'))
            .unwrap_or_else(|| panic!("Link target is not in <>: {link:?}"));
        Some(target.to_owned())
    }

    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "unexpected status: {self}");
        self
    }

    /// Asserts an OCI error: the status, a JSON `{"errors":[{"code","message"}]}` body whose
    /// first code is `code`, and the API version header every response carries.
    pub fn assert_error(&self, status: u16, code: &str) -> &Self {
        self.assert_status(status);
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "error Content-Type {content_type:?}: {self}"
        );
        let body = self.json();
        let errors = body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("no errors array: {self}"));
        assert!(!errors.is_empty(), "empty errors array: {self}");
        for error in errors {
            assert!(error["code"].is_string(), "error without a code: {self}");
            assert!(
                error["message"].is_string(),
                "error without a message: {self}"
            );
        }
        assert_eq!(errors[0]["code"], code, "error code: {self}");
        self.assert_api_version();
        self
    }

    /// Asserts the status of a failed `HEAD`, which carries no body.
    pub fn assert_head_error(&self, status: u16) -> &Self {
        self.assert_status(status);
        assert!(self.body.is_empty(), "a HEAD reply has a body: {self}");
        self.assert_api_version();
        self
    }

    pub fn assert_api_version(&self) -> &Self {
        assert_eq!(
            self.header("docker-distribution-api-version"),
            Some("registry/2.0"),
            "API version header: {self}"
        );
        self
    }

    /// Asserts the headers of an upload session reply: `Location` at the session, `Range`
    /// and `Docker-Upload-UUID` matching the session id.
    pub fn assert_upload_state(&self, status: u16, repo: &str, range: &str) -> &Self {
        self.assert_status(status);
        let location = self.location();
        let prefix = format!("/v2/{repo}/blobs/uploads/");
        let path = match location.split_once("://") {
            Some((_, rest)) => &rest[rest.find('/').unwrap_or(rest.len())..],
            None => location.as_str(),
        };
        let id = path
            .split('?')
            .next()
            .and_then(|p| p.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("Location {location:?} is not under {prefix}"));
        assert!(!id.is_empty(), "Location {location:?} has no session id");
        assert_eq!(self.header("range"), Some(range), "Range: {self}");
        assert_eq!(
            self.header("docker-upload-uuid"),
            Some(id),
            "Docker-Upload-UUID: {self}"
        );
        self
    }

    /// Asserts a blob-created reply: 201, `Location` at the blob, `Docker-Content-Digest`.
    pub fn assert_blob_created(&self, repo: &str, digest: &str) -> &Self {
        self.assert_status(201);
        assert_eq!(
            self.location(),
            format!("/v2/{repo}/blobs/{digest}"),
            "{self}"
        );
        assert_eq!(self.header("docker-content-digest"), Some(digest), "{self}");
        self
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} ", self.status, self.headers)?;
        if self.body.len() <= 2048 {
            write!(f, "{}", String::from_utf8_lossy(&self.body))
        } else {
            write!(f, "<{} bytes>", self.body.len())
        }
    }
}

/// A manifest with the blobs it needs, ready to push.
#[derive(Debug, Clone)]
pub struct Image {
    pub media_type: String,
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    /// The exact manifest bytes that are pushed.
    pub manifest: Vec<u8>,
}

impl Image {
    /// A single-layer OCI image whose config and layer derive from `seed`.
    pub fn oci(seed: &str) -> Self {
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "seed": seed,
        })
        .to_string()
        .into_bytes();
        let layer = content(&format!("layer of {seed}"), 300);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": descriptor(media::OCI_CONFIG, &config),
            "layers": [descriptor(media::OCI_LAYER, &layer)],
        });
        Self {
            media_type: media::OCI_MANIFEST.to_owned(),
            config,
            layers: vec![layer],
            manifest: manifest.to_string().into_bytes(),
        }
    }

    /// A single-layer Docker schema 2 image whose content derives from `seed`.
    pub fn docker(seed: &str) -> Self {
        let config = json!({"architecture": "arm64", "os": "linux", "seed": seed})
            .to_string()
            .into_bytes();
        let layer = content(&format!("docker layer of {seed}"), 200);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media::DOCKER_MANIFEST,
            "config": descriptor(media::DOCKER_CONFIG, &config),
            "layers": [descriptor(media::DOCKER_LAYER, &layer)],
        });
        Self {
            media_type: media::DOCKER_MANIFEST.to_owned(),
            config,
            layers: vec![layer],
            manifest: manifest.to_string().into_bytes(),
        }
    }

    /// The manifest as JSON, to derive variants from.
    pub fn manifest_json(&self) -> Value {
        serde_json::from_slice(&self.manifest).expect("the manifest is JSON")
    }

    pub fn digest(&self) -> String {
        sha256(&self.manifest)
    }

    /// A descriptor of this image's manifest, for an index or a `subject`.
    pub fn descriptor(&self) -> Value {
        descriptor(&self.media_type, &self.manifest)
    }
}

/// A content descriptor: media type, sha256 digest and size of `bytes`.
pub fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256(bytes), "size": bytes.len()})
}

/// An index (OCI or Docker manifest list) over the given manifest descriptors.
pub fn index(media_type: &str, manifests: &[Value]) -> Vec<u8> {
    json!({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests})
        .to_string()
        .into_bytes()
}

/// A descriptor with a platform, as manifest lists carry.
pub fn platform_descriptor(image: &Image, architecture: &str) -> Value {
    let mut descriptor = image.descriptor();
    descriptor["platform"] = json!({"architecture": architecture, "os": "linux"});
    descriptor
}
