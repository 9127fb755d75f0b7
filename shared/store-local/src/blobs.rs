//! [`FsBlobStore`]: blob bytes and upload staging in a directory of the local filesystem.
//!
//! ```text
//! <root>/blobs/<algorithm>/<first two hex>/<hex>   published blobs, never written in place
//! <root>/uploads/<upload id>/data                  the bytes an upload has staged so far
//! ```
//!
//! A blob appears only by `rename(2)` of a complete, fsynced staging file, so a reader sees
//! either no blob or all of it, also after a crash. Staging and blobs share one filesystem
//! (both live under the root), which is what makes that rename atomic. Upload ids are
//! canonical UUIDs (checked by [`UploadId`]'s parser), so they are safe directory names.
//!
//! `examples/throughput.rs` measures append and read speed against hashing alone and a plain
//! write of the same bytes.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use async_trait::async_trait;
use berth_core::error::{ErrorCode, RegistryError, Result};
use berth_core::ports::{BlobStore, ByteStream, StagedUpload};
use berth_core::{Algorithm, Digest, UploadId};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Size of the chunks a read yields and of the batches an append hands its writer. Large
/// enough that per-chunk overheads (a syscall, a task hand-off) vanish next to the copying.
const CHUNK_BYTES: usize = 1024 * 1024;

/// How much of a blob one mapping covers while it is read. Each window is unmapped once its
/// chunks are sent, so a reader holds at most a window or two of file pages whatever the
/// blob's size (a whole-blob mapping would keep every page read so far resident, and count
/// in the process's RSS, until the last chunk is gone).
const WINDOW_BYTES: usize = 8 * CHUNK_BYTES;
/// Batches an append may queue for its writer: what the body can run ahead of the disk.
const QUEUED_BATCHES: usize = 4;
/// Most chunks in one batch: Linux's `IOV_MAX`, so that a batch of tiny chunks is still
/// one `writev`.
const MAX_BATCH_CHUNKS: usize = 1024;

/// Blob bytes and upload staging in a local directory.
#[derive(Debug)]
pub struct FsBlobStore {
    root: PathBuf,
    locks: Arc<StagingLocks>,
}

impl FsBlobStore {
    /// Opens (creating it if needed) the blob store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| internal("creating the blob store root", e))?;
        let mut dirs = vec![root.join("blobs"), root.join("uploads")];
        dirs.extend(
            [Algorithm::Sha256, Algorithm::Sha512].map(|a| root.join("blobs").join(a.as_str())),
        );
        for dir in dirs {
            create_dir_durably(&dir).map_err(|e| internal("creating the blob store layout", e))?;
        }
        Ok(Self {
            root,
            locks: Arc::default(),
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        let mut path = self.root.join("blobs");
        path.extend([digest.algorithm().as_str(), &hex[..2], hex]);
        path
    }

    fn upload_dir(&self, id: &UploadId) -> PathBuf {
        self.root.join("uploads").join(id.as_str())
    }

    fn staged_path(&self, id: &UploadId) -> PathBuf {
        self.upload_dir(id).join("data")
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        match tokio::fs::metadata(self.blob_path(digest)).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(internal("reading a blob's size", e)),
        }
    }

    async fn read(
        &self,
        digest: &Digest,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<ByteStream> {
        let path = self.blob_path(digest);
        let unknown = blob_unknown(digest);
        let (file, size) = blocking(move || {
            let file = match File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(unknown),
                Err(e) => return Err(internal("opening a blob", e)),
            };
            let size = file
                .metadata()
                .map_err(|e| internal("reading a blob's size", e))?
                .len();
            Ok((file, size))
        })
        .await?;
        let range = range.unwrap_or(0..size);
        if range.end > size {
            return Err(internal(
                "reading a blob",
                "blob file is shorter than its size",
            ));
        }
        Ok(mapped_chunks(file, range))
    }

    async fn redirect_url(&self, _digest: &Digest) -> Result<Option<String>> {
        Ok(None)
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        match tokio::fs::remove_file(self.blob_path(digest)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(internal("deleting a blob", e)),
            _ => Ok(()),
        }
    }

    async fn begin_upload(&self, id: &UploadId) -> Result<Vec<u8>> {
        let (dir, path) = (self.upload_dir(id), self.staged_path(id));
        blocking(move || {
            fs::create_dir(&dir).map_err(|e| internal("creating an upload's directory", e))?;
            File::create(&path).map_err(|e| internal("creating an upload's staging file", e))?;
            Ok(())
        })
        .await?;
        Ok(Vec::new())
    }

    async fn append(&self, staged: &StagedUpload, mut body: ByteStream) -> Result<(u64, Vec<u8>)> {
        let (batches, queue) = mpsc::channel(QUEUED_BATCHES);
        let writer = {
            let (path, locks, id, start) = (
                self.staged_path(&staged.id),
                Arc::clone(&self.locks),
                staged.id.clone(),
                staged.size,
            );
            tokio::task::spawn_blocking(move || {
                let _lock = locks.acquire(&id);
                write_batches(&path, &id, start, queue)
            })
        };
        let fed = feed(&mut body, &batches).await;
        drop(batches);
        let written = writer.await.map_err(task_failed)??;
        match (fed, written) {
            (Err(body_error), _) => Err(RegistryError::new(
                ErrorCode::BlobUploadInvalid,
                format!("the request body could not be read: {body_error}"),
            )),
            (Ok(()), Some(written)) => Ok((written, Vec::new())),
            (Ok(()), None) => Err(internal(
                "appending",
                "the writer stopped before the body ended",
            )),
        }
    }

    async fn read_staged(&self, staged: &StagedUpload) -> Result<ByteStream> {
        let (path, id, size) = (self.staged_path(&staged.id), staged.id.clone(), staged.size);
        let file = blocking(move || match File::open(&path) {
            Ok(file) => Ok(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(upload_unknown(&id)),
            Err(e) => Err(internal("opening an upload's staging file", e)),
        })
        .await?;
        Ok(read_chunks(file, size))
    }

    async fn commit(&self, staged: &StagedUpload, digest: &Digest) -> Result<()> {
        let (target, staged_path, upload_dir) = (
            self.blob_path(digest),
            self.staged_path(&staged.id),
            self.upload_dir(&staged.id),
        );
        let (locks, id, size) = (Arc::clone(&self.locks), staged.id.clone(), staged.size);
        blocking(move || {
            let _lock = locks.acquire(&id);
            if !target.exists() {
                publish(&staged_path, &id, size, &target)?;
            }
            remove_upload_dir(&upload_dir)
        })
        .await
    }

    async fn abort(&self, staged: &StagedUpload) -> Result<()> {
        let (dir, locks, id) = (
            self.upload_dir(&staged.id),
            Arc::clone(&self.locks),
            staged.id.clone(),
        );
        blocking(move || {
            let _lock = locks.acquire(&id);
            remove_upload_dir(&dir)
        })
        .await
    }
}

/// A unit of work for an append's writer.
enum Batch {
    /// Body chunks, passed on as they arrived: the writer hands them to one `writev`, so
    /// the async side neither copies nor allocates.
    Chunks(Vec<Bytes>),
    /// The body ended cleanly: make the bytes durable and report.
    End,
}

/// Pulls the body (which is where the registry hashes it) and hands it to the writer in
/// batches of about [`CHUNK_BYTES`], so hashing and writing proceed on two cores at once.
/// Returns the body's error, if it had one; stops quietly when the writer hangs up, since the
/// writer then reports why.
async fn feed(body: &mut ByteStream, batches: &mpsc::Sender<Batch>) -> io::Result<()> {
    let mut batch = Vec::new();
    let mut batch_bytes = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if chunk.is_empty() {
            // `writev` reports zero bytes written for it, which reads as a full disk.
            continue;
        }
        batch_bytes += chunk.len();
        batch.push(chunk);
        if batch_bytes >= CHUNK_BYTES || batch.len() >= MAX_BATCH_CHUNKS {
            batch_bytes = 0;
            if batches
                .send(Batch::Chunks(std::mem::take(&mut batch)))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
    }
    if !batch.is_empty() && batches.send(Batch::Chunks(batch)).await.is_err() {
        return Ok(());
    }
    let _ = batches.send(Batch::End).await;
    Ok(())
}

/// The writer of one append: truncates the staging file to `start` (dropping what an
/// interrupted append left), then writes batches until the body ends. Returns the byte
/// count, or `None` if the body failed or the request was dropped, in which case the file is
/// cut back to `start` so nothing the upload relies on has changed.
fn write_batches(
    path: &Path,
    id: &UploadId,
    start: u64,
    mut queue: mpsc::Receiver<Batch>,
) -> Result<Option<u64>> {
    let failed = |e: io::Error| internal("writing an upload's staging file", e);
    let mut file = open_staged(path, id, start)?;
    file.set_len(start).map_err(failed)?;
    file.seek(SeekFrom::Start(start)).map_err(failed)?;
    let mut written = 0;
    while let Some(batch) = queue.blocking_recv() {
        match batch {
            Batch::Chunks(chunks) => {
                write_all_vectored(&mut file, &chunks).map_err(failed)?;
                written += chunks.iter().map(|c| c.len() as u64).sum::<u64>();
            }
            Batch::End => {
                // Once append returns, the session records the new size; the bytes behind
                // it must survive a crash as well as the session does.
                file.sync_data().map_err(failed)?;
                return Ok(Some(written));
            }
        }
    }
    file.set_len(start).map_err(failed)?;
    Ok(None)
}

/// Writes every chunk, in as few `writev` calls as the kernel allows.
fn write_all_vectored(file: &mut File, chunks: &[Bytes]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut remaining = &mut slices[..];
    while !remaining.is_empty() {
        match file.write_vectored(remaining) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut remaining, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Opens an upload's staging file for writing, checking it holds at least `size` bytes.
fn open_staged(path: &Path, id: &UploadId, size: u64) -> Result<File> {
    let file = match OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(upload_unknown(id)),
        Err(e) => return Err(internal("opening an upload's staging file", e)),
    };
    let len = file
        .metadata()
        .map_err(|e| internal("reading an upload's staged size", e))?
        .len();
    if len < size {
        // Never pad with zeros: that would publish bytes nobody sent.
        return Err(internal(
            "opening an upload's staging file",
            format!("upload {id} staged {len} bytes, its session says {size}"),
        ));
    }
    Ok(file)
}

/// Makes the first `size` staged bytes durable and renames them to `target`.
fn publish(staged_path: &Path, id: &UploadId, size: u64, target: &Path) -> Result<()> {
    let failed = |e: io::Error| internal("publishing a blob", e);
    let file = open_staged(staged_path, id, size)?;
    file.set_len(size).map_err(failed)?;
    file.sync_data().map_err(failed)?;
    drop(file);
    let parent = target
        .parent()
        .ok_or_else(|| internal("publishing a blob", "a blob path has no parent"))?;
    create_dir_durably(parent).map_err(failed)?;
    fs::rename(staged_path, target).map_err(failed)?;
    sync_dir(parent).map_err(failed)
}

fn remove_upload_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(internal("removing an upload", e)),
        _ => Ok(()),
    }
}

/// Creates `dir` if missing, and fsyncs its parent so the new entry survives a crash. The
/// parent must exist.
fn create_dir_durably(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => dir.parent().map_or(Ok(()), sync_dir),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Maps `len` bytes of a published blob from `offset`, read-only, to be read once in order.
#[allow(unsafe_code)]
fn map_window(file: &File, offset: usize, len: usize) -> io::Result<memmap2::Mmap> {
    // SAFETY: a published blob is never written or truncated in place: it appears by rename
    // of a complete file and disappears by unlink, which keeps the mapped inode alive (the
    // stream holds the open file). The mapping therefore never changes under the reader, and
    // is only ever read.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(offset as u64)
            .len(len)
            .map(file)?
    };
    map.advise(memmap2::Advice::Sequential).ok();
    map.advise(memmap2::Advice::WillNeed).ok();
    Ok(map)
}

/// Streams `range` of a blob in chunks of [`CHUNK_BYTES`] without copying: each chunk is a
/// slice of a mapping, copied once, by the kernel, into the socket. The blob is mapped a
/// window of [`WINDOW_BYTES`] at a time, read ahead (`WILLNEED`) as it is mapped; a window is
/// unmapped when its last chunk is dropped.
fn mapped_chunks(file: File, range: std::ops::Range<u64>) -> ByteStream {
    let (start, end) = (range.start as usize, range.end as usize);
    // The window being read: where it starts and ends in the blob, and its bytes.
    let mut window: Option<(usize, usize, Bytes)> = None;
    let chunks = (start..end).step_by(CHUNK_BYTES).map(move |offset| {
        let upto = (offset + CHUNK_BYTES).min(end);
        let current = match window.take() {
            Some(window) if window.1 >= upto => window,
            // Windows start at chunk boundaries and hold whole chunks, so a chunk is never
            // split between two.
            _ => {
                let window_end = (offset + WINDOW_BYTES).min(end);
                let map = map_window(&file, offset, window_end - offset)?;
                (offset, window_end, Bytes::from_owner(MappedWindow(map)))
            }
        };
        let chunk = current.2.slice(offset - current.0..upto - current.0);
        window = Some(current);
        Ok(chunk)
    });
    Box::pin(futures_util::stream::iter(chunks))
}

struct MappedWindow(memmap2::Mmap);

impl AsRef<[u8]> for MappedWindow {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Streams `length` bytes of a staging `file` from its current position, in chunks of
/// [`CHUNK_BYTES`]. Each chunk is read by a short blocking task, and the next read starts as
/// soon as a chunk is handed out, so the disk works while the client receives. No thread is
/// held while the client is slow, and at most two chunks are in memory.
fn read_chunks(file: File, length: u64) -> ByteStream {
    let reader = ChunkReader {
        file,
        remaining: length,
    };
    let first = tokio::task::spawn_blocking(move || reader.next_chunk());
    Box::pin(futures_util::stream::unfold(
        Some(first),
        |pending: Option<JoinHandle<_>>| async move {
            let (reader, chunk) = match pending?.await {
                Ok(read) => read,
                Err(e) => return Some((Err(io::Error::other(e)), None)),
            };
            match chunk {
                Ok(Some(bytes)) => {
                    let next = tokio::task::spawn_blocking(move || reader.next_chunk());
                    Some((Ok(bytes), Some(next)))
                }
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        },
    ))
}

struct ChunkReader {
    file: File,
    remaining: u64,
}

impl ChunkReader {
    /// The next chunk, or `None` once `remaining` bytes were read. A file shorter than
    /// promised is an error, never a silently short body.
    fn next_chunk(mut self) -> (Self, io::Result<Option<Bytes>>) {
        let want = usize::try_from(self.remaining).map_or(CHUNK_BYTES, |r| r.min(CHUNK_BYTES));
        if want == 0 {
            return (self, Ok(None));
        }
        // `read_to_end` fills spare capacity without zeroing it first.
        let mut chunk = Vec::with_capacity(want);
        let read = (&mut self.file).take(want as u64).read_to_end(&mut chunk);
        match read {
            Ok(n) if n < want => {
                let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "blob file ended early");
                return (self, Err(eof));
            }
            Ok(_) => {}
            Err(e) => return (self, Err(e)),
        }
        self.remaining -= want as u64;
        (self, Ok(Some(Bytes::from(chunk))))
    }
}

/// Serialises the blocking work on each upload's staging file. The registry already lets one
/// request at a time work on an upload, but a request dropped mid-append (client gone) leaves
/// its writer finishing in the background; the next append or the commit must wait for it,
/// or its late writes would land in the middle of theirs. Locking by id before opening the
/// file (rather than `flock` on an open file) also means a writer that waited cannot touch a
/// file that was meanwhile renamed into a blob.
#[derive(Debug, Default)]
struct StagingLocks {
    busy: Mutex<HashSet<UploadId>>,
    released: Condvar,
}

impl StagingLocks {
    /// Blocks until `id` is free, then holds it until the guard drops.
    fn acquire(self: &Arc<Self>, id: &UploadId) -> StagingGuard {
        let mut busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        while busy.contains(id) {
            busy = self
                .released
                .wait(busy)
                .unwrap_or_else(PoisonError::into_inner);
        }
        busy.insert(id.clone());
        StagingGuard {
            locks: Arc::clone(self),
            id: id.clone(),
        }
    }
}

struct StagingGuard {
    locks: Arc<StagingLocks>,
    id: UploadId,
}

impl Drop for StagingGuard {
    fn drop(&mut self) {
        self.locks
            .busy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
        self.locks.released.notify_all();
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(task_failed)?
}

/// An internal failure. Causes name the operation, never a path: the data directory's
/// location is nobody's business but the operator's.
fn internal(action: &str, cause: impl std::fmt::Display) -> RegistryError {
    RegistryError::internal(format!("blob store: {action}: {cause}"))
}

fn task_failed(e: tokio::task::JoinError) -> RegistryError {
    internal("a blocking task failed", e)
}

fn blob_unknown(digest: &Digest) -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUnknown,
        format!("blob {digest} is not known"),
    )
}

fn upload_unknown(id: &UploadId) -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUploadUnknown,
        format!("upload {id} has no staged bytes"),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn store() -> (tempfile::TempDir, FsBlobStore) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = FsBlobStore::open(dir.path()).expect("opening the store");
        (dir, store)
    }

    fn body(chunks: &[&[u8]]) -> ByteStream {
        let chunks: Vec<io::Result<Bytes>> = chunks
            .iter()
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures_util::stream::iter(chunks))
    }

    async fn begin(store: &FsBlobStore) -> StagedUpload {
        let id = UploadId::generate();
        let backend = store.begin_upload(&id).await.expect("begin_upload");
        StagedUpload {
            id,
            size: 0,
            backend,
        }
    }

    async fn staged_bytes(store: &FsBlobStore, staged: &StagedUpload) -> Vec<u8> {
        let mut stream = store.read_staged(staged).await.expect("read_staged");
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.expect("a staged chunk"));
        }
        bytes
    }

    #[test]
    fn paths_follow_the_content_address_layout() {
        let (dir, store) = store();
        let sha256 = Digest::of(Algorithm::Sha256, b"x");
        let hex = sha256.hex();
        let expected = dir.path().join(format!("blobs/sha256/{}/{hex}", &hex[..2]));
        assert_eq!(store.blob_path(&sha256), expected);
        let sha512 = Digest::of(Algorithm::Sha512, b"x");
        assert!(
            store
                .blob_path(&sha512)
                .starts_with(dir.path().join("blobs/sha512"))
        );
        let id = UploadId::generate();
        assert_eq!(
            store.staged_path(&id),
            dir.path().join(format!("uploads/{id}/data"))
        );
        for sub in ["blobs/sha256", "blobs/sha512", "uploads"] {
            assert!(dir.path().join(sub).is_dir(), "{sub} was created");
        }
    }

    #[tokio::test]
    async fn commit_and_abort_leave_no_staging_behind() {
        let (dir, store) = store();
        let uploads = dir.path().join("uploads");
        let digest = Digest::of(Algorithm::Sha256, b"abc");
        for _ in 0..2 {
            let staged = begin(&store).await;
            let (n, _) = store
                .append(&staged, body(&[b"abc"]))
                .await
                .expect("append");
            let staged = StagedUpload { size: n, ..staged };
            store.commit(&staged, &digest).await.expect("commit");
            assert_eq!(
                fs::read_dir(&uploads).expect("uploads").count(),
                0,
                "after commit"
            );
        }
        assert_eq!(
            fs::read(store.blob_path(&digest)).expect("the blob"),
            b"abc"
        );

        let staged = begin(&store).await;
        store.abort(&staged).await.expect("abort");
        assert_eq!(
            fs::read_dir(&uploads).expect("uploads").count(),
            0,
            "after abort"
        );
    }

    #[tokio::test]
    async fn unknown_uploads_are_reported_as_such() {
        let (_dir, store) = store();
        let staged = StagedUpload {
            id: UploadId::generate(),
            size: 0,
            backend: Vec::new(),
        };
        let appended = store.append(&staged, body(&[b"x"])).await;
        assert_eq!(
            appended.expect_err("append").code(),
            ErrorCode::BlobUploadUnknown
        );
        let read = store.read_staged(&staged).await.map(|_| ());
        assert_eq!(
            read.expect_err("read_staged").code(),
            ErrorCode::BlobUploadUnknown
        );
        let digest = Digest::of(Algorithm::Sha256, b"");
        let committed = store.commit(&staged, &digest).await;
        assert_eq!(
            committed.expect_err("commit").code(),
            ErrorCode::BlobUploadUnknown
        );
    }

    #[tokio::test]
    async fn staging_shorter_than_its_session_is_never_padded() {
        let (_dir, store) = store();
        let staged = begin(&store).await;
        store
            .append(&staged, body(&[b"0123456789"]))
            .await
            .expect("append");
        let claims_more = StagedUpload { size: 20, ..staged };
        let appended = store.append(&claims_more, body(&[b"x"])).await;
        assert_eq!(appended.expect_err("append").code(), ErrorCode::Unknown);
        let digest = Digest::of(Algorithm::Sha256, b"whatever");
        let committed = store.commit(&claims_more, &digest).await;
        assert_eq!(committed.expect_err("commit").code(), ErrorCode::Unknown);
        assert_eq!(store.stat(&digest).await.expect("stat"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_append_does_not_disturb_the_next_one() {
        let (_dir, store) = store();
        let staged = begin(&store).await;
        let (n, _) = store
            .append(&staged, body(&[b"kept "]))
            .await
            .expect("append");
        let staged = StagedUpload { size: n, ..staged };

        // A client that sends 3 MiB and then stalls until its request is dropped.
        let stalled: ByteStream = Box::pin(
            futures_util::stream::iter(vec![Ok(Bytes::from(vec![b'!'; 3 * CHUNK_BYTES]))])
                .chain(futures_util::stream::pending()),
        );
        let dropped =
            tokio::time::timeout(Duration::from_millis(200), store.append(&staged, stalled));
        assert!(dropped.await.is_err(), "the stalled append was cut off");

        let (n, _) = store
            .append(&staged, body(&[b"and more"]))
            .await
            .expect("append");
        let staged = StagedUpload {
            size: staged.size + n,
            ..staged
        };
        assert_eq!(staged_bytes(&store, &staged).await, b"kept and more");
        let file_len = fs::metadata(store.staged_path(&staged.id))
            .expect("staging")
            .len();
        assert_eq!(
            file_len, staged.size,
            "nothing of the dropped append is left"
        );
    }

    #[tokio::test]
    async fn tiny_and_empty_chunks_are_written_in_order() {
        let (_dir, store) = store();
        let chunks: Vec<Vec<u8>> = (0..5000u32)
            .map(|i| (0..i % 4).map(|j| (i * 4 + j) as u8).collect())
            .collect();
        let expected: Vec<u8> = chunks.concat();
        let borrowed: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let staged = begin(&store).await;
        let (n, _) = store
            .append(&staged, body(&borrowed))
            .await
            .expect("append");
        assert_eq!(n, expected.len() as u64);
        let staged = StagedUpload { size: n, ..staged };
        assert_eq!(staged_bytes(&store, &staged).await, expected);
    }

    #[tokio::test]
    async fn reads_stream_in_bounded_chunks() {
        let (_dir, store) = store();
        // Over two mapping windows, read from an offset that is not a chunk boundary.
        let bytes: Vec<u8> = (0..2 * WINDOW_BYTES + 3 * CHUNK_BYTES + 100)
            .map(|i| (i % 199) as u8)
            .collect();
        let digest = Digest::of(Algorithm::Sha256, &bytes);
        let staged = begin(&store).await;
        let small: Vec<&[u8]> = bytes.chunks(4096).collect();
        let (n, _) = store.append(&staged, body(&small)).await.expect("append");
        store
            .commit(&StagedUpload { size: n, ..staged }, &digest)
            .await
            .expect("commit");
        let mut stream = store
            .read(&digest, Some(10..bytes.len() as u64))
            .await
            .expect("read");
        let mut read = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.expect("a chunk");
            assert!(
                chunk.len() <= CHUNK_BYTES,
                "a chunk of {} bytes",
                chunk.len()
            );
            read.extend_from_slice(&chunk);
        }
        assert!(read == bytes[10..], "the ranged read matches");
    }

    #[tokio::test]
    async fn a_blob_file_shorter_than_the_range_is_refused() {
        let (_dir, store) = store();
        let staged = begin(&store).await;
        let (n, _) = store
            .append(&staged, body(&[b"0123456789"]))
            .await
            .expect("append");
        let digest = Digest::of(Algorithm::Sha256, b"0123456789");
        store
            .commit(&StagedUpload { size: n, ..staged }, &digest)
            .await
            .expect("commit");
        fs::OpenOptions::new()
            .write(true)
            .open(store.blob_path(&digest))
            .and_then(|f| f.set_len(7))
            .expect("truncating behind the store's back");
        // The registry resolved the range against the size it recorded: the read is refused
        // before any byte is sent, rather than cut short mid-body.
        let err = match store.read(&digest, Some(5..10)).await {
            Ok(_) => panic!("a short file must not be served"),
            Err(err) => err,
        };
        assert_eq!(err.code(), ErrorCode::Unknown);
    }

    #[test]
    fn staging_locks_exclude_and_release() {
        let locks = Arc::new(StagingLocks::default());
        let (a, b) = (UploadId::generate(), UploadId::generate());
        let held = locks.acquire(&a);
        drop(locks.acquire(&b));
        let waiter = {
            let locks = Arc::clone(&locks);
            let a = a.clone();
            std::thread::spawn(move || drop(locks.acquire(&a)))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !waiter.is_finished(),
            "a second holder of the same id waits"
        );
        drop(held);
        waiter
            .join()
            .expect("the waiter gets the lock once it is released");
        assert!(locks.busy.lock().expect("the lock set").is_empty());
    }
}
