//! The streamed bodies of a blob upload: one content stream shared by the requests that
//! carry it chunk by chunk, and the watch that notices when an upload stops moving.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::{ByteStream, READ_TIMEOUT, lock};

/// The content being uploaded, shared by the request bodies that carry it: each chunk's
/// body takes its share, and what it read beyond stays for the next.
pub(super) struct Source {
    stream: ByteStream,
    /// Read from the stream but not yet sent.
    pending: Bytes,
    size: u64,
    pub(super) sent: u64,
    /// When bytes last went out: the upload's sign of life.
    pub(super) progress: tokio::time::Instant,
    /// Why reading the content failed, to report it as such.
    pub(super) failure: Option<String>,
}

pub(super) type SharedSource = Arc<Mutex<Source>>;

impl Source {
    pub(super) fn shared(stream: ByteStream, size: u64) -> SharedSource {
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
pub(super) struct Portion {
    source: SharedSource,
    remaining: u64,
}

impl Portion {
    pub(super) fn body(source: &SharedSource, length: u64) -> reqwest::Body {
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
pub(super) async fn stalled(source: &SharedSource) {
    loop {
        let deadline = lock(source).progress + READ_TIMEOUT;
        if tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::TryStreamExt;

    use super::*;

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
