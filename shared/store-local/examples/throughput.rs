//! Measures `FsBlobStore` with a 1 GiB blob: append (hashed as the registry hashes it, then
//! fsynced), commit, and streamed reads, next to what hashing alone and a plain write of the
//! same bytes take on this machine. Run with
//! `cargo run --release -p berth-store-local --example throughput [MiB] [dir]`.

use std::io::{self, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use berth_core::digest::DigestHasher;
use berth_core::ports::{BlobStore, ByteStream, StagedUpload};
use berth_core::{Algorithm, UploadId};
use berth_store_local::FsBlobStore;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

const MIB: usize = 1024 * 1024;
/// The size of the body chunks a network stack typically hands over.
const NETWORK_CHUNK: usize = 64 * 1024;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map_or(Ok(1024), |a| a.parse())?;
    let dir = match args.next() {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let store = FsBlobStore::open(dir.path())?;
    let pattern = Bytes::from(
        (0..8 * MIB)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<_>>(),
    );
    let total = (mib * MIB) as u64;

    let started = Instant::now();
    let mut hasher = DigestHasher::new(Algorithm::Sha256);
    let mut chunks = body(&pattern, mib);
    while let Some(chunk) = chunks.next().await {
        hasher.update(&chunk?);
    }
    report("hash only (no disk)", total, started);

    // Alternate with a plain write: on a shared disk either may catch a slow moment.
    let mut digest = None;
    for round in 1..=2 {
        let started = Instant::now();
        let baseline = dir.path().join("baseline");
        let mut file = std::fs::File::create(&baseline)?;
        for i in 0..mib {
            let at = i * MIB % pattern.len();
            file.write_all(&pattern[at..at + MIB])?;
        }
        file.sync_data()?;
        drop(file);
        report(&format!("plain write + fsync #{round}"), total, started);
        std::fs::remove_file(&baseline)?;

        let hasher = Arc::new(Mutex::new(DigestHasher::new(Algorithm::Sha256)));
        let id = UploadId::generate();
        let backend = store.begin_upload(&id).await?;
        let staged = StagedUpload {
            id,
            size: 0,
            backend,
        };
        let started = Instant::now();
        let hashed: ByteStream = Box::pin(Hashing {
            inner: body(&pattern, mib),
            hasher: Arc::clone(&hasher),
        });
        let (written, backend) = store.append(&staged, hashed).await?;
        report(
            &format!("append (hash + write + fsync) #{round}"),
            written,
            started,
        );
        let committed = hasher.lock().map_err(|_| "poisoned")?.clone().finish();

        let started = Instant::now();
        let staged = StagedUpload {
            size: written,
            backend,
            ..staged
        };
        store.commit(&staged, &committed).await?;
        println!(
            "commit #{round}: {:.1} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
        if round == 1 {
            store.delete(&committed).await?;
        }
        digest = Some(committed);
    }
    let digest = digest.ok_or("no rounds")?;

    for round in 1..=3 {
        let started = Instant::now();
        let mut read = store.read(&digest, None).await?;
        let mut bytes = 0;
        while let Some(chunk) = read.next().await {
            bytes += chunk?.len() as u64;
        }
        report(&format!("read #{round} (page cache)"), bytes, started);
    }
    Ok(())
}

fn body(pattern: &Bytes, mib: usize) -> ByteStream {
    let pattern = pattern.clone();
    let chunks = (0..mib * MIB / NETWORK_CHUNK).map(move |i| {
        let at = i * NETWORK_CHUNK % pattern.len();
        Ok::<_, io::Error>(pattern.slice(at..at + NETWORK_CHUNK))
    });
    Box::pin(futures_util::stream::iter(chunks))
}

fn report(what: &str, bytes: u64, started: Instant) {
    let seconds = started.elapsed().as_secs_f64();
    let rate = bytes as f64 / MIB as f64 / seconds;
    println!(
        "{what}: {} MiB in {seconds:.2} s = {rate:.0} MiB/s",
        bytes / MIB as u64
    );
}

/// Hashes chunks as they are polled, as the registry's upload path does.
struct Hashing {
    inner: ByteStream,
    hasher: Arc<Mutex<DigestHasher>>,
}

impl Stream for Hashing {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled
            && let Ok(mut hasher) = self.hasher.lock()
        {
            hasher.update(chunk);
        }
        polled
    }
}
