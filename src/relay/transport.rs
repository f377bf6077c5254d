//! The bytes under a relay connection's WebSocket: plain TCP, or TLS over it; the TLS
//! handshake; the deadline on every write and what the connection has heard when.
//!
//! Owns the server side of the TLS handshake, run inside each connection's own task so a
//! slow or silent client never holds up the accept loop, and two guards every byte passes:
//! a write that makes no progress for `write_timeout` (or is still waiting when the
//! connection's interrupt fires) fails, and every read is noted in a `ReadClock`. Must not
//! read frames or know about accounts: it only moves bytes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// When the peer's bytes arrived: for the idle deadline and the deadline on a frame that has
/// started arriving.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadClock {
    /// Bytes read so far.
    bytes: u64,
    /// Bytes read when the connection last got a whole frame (`settle`).
    settled: u64,
    /// When the last bytes arrived (the accept, before any).
    pub last_read: Instant,
    /// When bytes arrived that are not part of a whole frame yet, if any have.
    pub unsettled_since: Option<Instant>,
}

/// Why a write failed in this layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteFault {
    /// No progress within the write deadline.
    TimedOut,
    /// The interrupt fired while the write waited.
    Interrupted,
}

/// An accepted connection, encrypted or not, with its write deadline and read clock.
pub(crate) struct Stream {
    io: Io,
    write_timeout: Duration,
    /// Running while a write or flush waits for the peer; reset by any progress.
    stall: Option<Pin<Box<Sleep>>>,
    interrupt: Pin<Box<WaitForCancellationFutureOwned>>,
    fault: Option<WriteFault>,
    clock: ReadClock,
}

/// Runs the TLS handshake on `tcp` if the relay serves TLS (`tls` is Some). The caller
/// bounds it in time. Writes on the stream fail after `write_timeout` without progress,
/// or at once while they wait once `interrupt` fires.
pub(crate) async fn accept(
    tls: Option<&Arc<ServerConfig>>,
    tcp: TcpStream,
    write_timeout: Duration,
    interrupt: CancellationToken,
) -> io::Result<Stream> {
    let io = match tls {
        None => Io::Plain(tcp),
        Some(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
            Io::Tls(Box::new(acceptor.accept(tcp).await?))
        }
    };
    let now = Instant::now();
    Ok(Stream {
        io,
        write_timeout,
        stall: None,
        interrupt: Box::pin(interrupt.cancelled_owned()),
        fault: None,
        clock: ReadClock {
            bytes: 0,
            settled: 0,
            last_read: now,
            unsettled_since: None,
        },
    })
}

impl Stream {
    /// The address of the peer on the other end of the TCP connection.
    pub(crate) fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        match &self.io {
            Io::Plain(t) => t.peer_addr(),
            Io::Tls(t) => t.get_ref().0.peer_addr(),
        }
    }

    /// From now on, a waiting write fails once `token` fires (e.g. a newer connection for
    /// the same account signed in).
    pub fn interrupt_writes_on(&mut self, token: CancellationToken) {
        self.interrupt = Box::pin(token.cancelled_owned());
    }

    /// Why the last write failed here, if it did.
    pub fn fault(&self) -> Option<WriteFault> {
        self.fault
    }

    pub fn clock(&self) -> ReadClock {
        self.clock
    }

    /// The connection got a whole frame: what has been read so far is accounted for.
    pub fn settle(&mut self) {
        self.clock.settled = self.clock.bytes;
        self.clock.unsettled_since = None;
    }

    /// Applies the write deadline and the interrupt to the result of a write or flush.
    fn guard<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stall = None;
            return r;
        }
        if self.interrupt.as_mut().poll(cx).is_ready() {
            self.fault = Some(WriteFault::Interrupted);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "write interrupted: the connection is being ended",
            )));
        }
        let timeout = self.write_timeout;
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stall.as_mut().poll(cx).is_ready() {
            self.fault = Some(WriteFault::TimedOut);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer did not read within the write deadline",
            )));
        }
        Poll::Pending
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        let n = buf.filled().len() - before;
        if n > 0 {
            let now = Instant::now();
            let c = &mut this.clock;
            c.bytes += n as u64;
            c.last_read = now;
            if c.unsettled_since.is_none() && c.bytes > c.settled {
                c.unsettled_since = Some(now);
            }
        }
        r
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        };
        this.guard(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        };
        this.guard(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        };
        this.guard(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        };
        this.guard(cx, r)
    }
}
