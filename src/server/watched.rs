//! I/O accounting of one HTTP connection: what it has read and when its
//! requests began, to tell an idle client from a slow one.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Decrements a gauge when dropped.
pub struct GaugeGuard(pub prometheus::IntGauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What one TCP connection has read so far, to tell an idle client from a
/// slow one.
#[derive(Default)]
pub struct Activity {
    bytes_read: AtomicU64,
    requests: AtomicU64,
    /// `bytes_read` when the last request's head was complete.
    at_last_request: AtomicU64,
}

impl Activity {
    pub fn request_started(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.at_last_request
            .store(self.bytes_read.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    pub fn bytes_since_request(&self) -> u64 {
        self.bytes_read() - self.at_last_request.load(Ordering::Relaxed)
    }
}

/// A TCP stream that counts the bytes read from it.
pub struct WatchedStream {
    inner: TcpStream,
    pub activity: Arc<Activity>,
}

impl WatchedStream {
    pub fn new(inner: TcpStream) -> Self {
        WatchedStream {
            inner,
            activity: Arc::default(),
        }
    }
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        if read > 0 {
            self.activity.bytes_read.fetch_add(read, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
