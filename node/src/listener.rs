//! The HTTP listener: TCP_NODELAY on every connection (streams write small frames and must not
//! wait for Nagle), and a kill switch per connection.
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

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

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

/// The gateway's listener: [`KillableStream`]s with TCP_NODELAY.
#[derive(Debug)]
pub struct GatewayListener(pub TcpListener);

impl Listener for GatewayListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "TCP_NODELAY");
                    }
                    let io = KillableStream {
                        inner: stream,
                        switch: KillSwitch::default(),
                    };
                    return (io, addr);
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// What handlers know of the connection a request came on.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub kill: KillSwitch,
}

impl Connected<IncomingStream<'_, GatewayListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, GatewayListener>) -> Self {
        Self {
            addr: *stream.remote_addr(),
            kill: stream.io().switch.clone(),
        }
    }
}
