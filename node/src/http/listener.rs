//! The HTTP connections' I/O: a kill switch per connection ([`super::serve`] accepts them, with
//! TCP_NODELAY: streams write small frames and must not wait for Nagle).
//!
//! Hyper owns the socket of an SSE response and stops polling the body while the client does
//! not read; nothing in the body can then end the connection. The [`KillSwitch`] can: once
//! killed, every read and write on the connection fails, and the task hyper parked on the
//! socket is woken to see it, so that a stuck client is dropped and its memory freed.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Ends one connection from outside.
#[derive(Debug, Clone, Default)]
pub struct KillSwitch(Arc<KillInner>);

#[derive(Debug, Default)]
struct KillInner {
    killed: AtomicBool,
    read: AtomicWaker,
    write: AtomicWaker,
}

impl KillSwitch {
    /// Fails every further read and write of the connection.
    pub fn kill(&self) {
        self.0.killed.store(true, Ordering::Release);
        self.0.read.wake();
        self.0.write.wake();
    }

    fn killed(&self) -> bool {
        self.0.killed.load(Ordering::Acquire)
    }
}

fn aborted() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection closed by the gateway",
    )
}

/// A TCP connection with a [`KillSwitch`].
#[derive(Debug)]
pub struct KillableStream {
    inner: TcpStream,
    switch: KillSwitch,
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.switch.killed() {
            return Poll::Ready(Err(aborted()));
        }
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if polled.is_pending() {
            self.switch.0.read.register(cx.waker());
            if self.switch.killed() {
                return Poll::Ready(Err(aborted()));
            }
        }
        polled
    }
}

impl KillableStream {
    /// `stream` with a kill switch of its own.
    pub fn new(stream: TcpStream) -> Self {
        Self {
            inner: stream,
            switch: KillSwitch::default(),
        }
    }

    /// The switch that ends this connection.
    pub fn switch(&self) -> &KillSwitch {
        &self.switch
    }

    fn check_pending<T>(
        &self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_pending() {
            self.switch.0.write.register(cx.waker());
            if self.switch.killed() {
                return Poll::Ready(Err(aborted()));
            }
        }
        polled
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.switch.killed() {
            return Poll::Ready(Err(aborted()));
        }
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check_pending(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.switch.killed() {
            return Poll::Ready(Err(aborted()));
        }
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check_pending(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.switch.killed() {
            return Poll::Ready(Err(aborted()));
        }
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.check_pending(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What handlers know of the connection a request came on.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub kill: KillSwitch,
}
