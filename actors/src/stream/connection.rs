//! Streaming connections: one task per client, registered by id.
//!
//! Each connection runs its I/O on its own task (built by the HTTP side: a WebSocket loop, or
//! the watchdog of an SSE body) and holds a [`CloseSwitch`], through which anyone may end it with a
//! [`CloseReason`]; the I/O then sends the close frame or the final SSE event.
//! [`Connections`] counts them against the node's limit, lists them and, on shutdown, closes
//! them all with `going-away` and waits (bounded) for their final words.
//!
//! Not a ractor actor per connection, as first designed: an idle ractor actor (four channels,
//! its task, its place in the supervision tree) measured 9 KB, more than the whole budget of an
//! idle WebSocket (8 KB). A connection has no mailbox to serve: its only inputs are its socket,
//! its topic's ring and its close switch, which its task selects on directly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::Notify;
use tokio_util::sync::{
    CancellationToken, WaitForCancellationFuture, WaitForCancellationFutureOwned,
};

use super::CloseReason;

/// How long a closing connection may take to send its final frame or event.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Who a connection is.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectionInfo {
    pub id: u64,
    pub topic: String,
    /// `websocket` or `sse`.
    pub protocol: &'static str,
    pub peer: String,
    /// The authenticated principal, if any.
    pub principal: Option<String>,
    /// Unix milliseconds at which it opened.
    pub opened_ms: u64,
}

/// The close switch of one connection, shared by its I/O task and its actor.
#[derive(Debug, Clone, Default)]
pub struct CloseSwitch {
    cancel: CancellationToken,
    reason: Arc<Mutex<Option<CloseReason>>>,
}

impl CloseSwitch {
    /// Asks the connection to close with `reason` (the first reason given wins).
    pub fn close(&self, reason: CloseReason) {
        let mut slot = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(reason);
        drop(slot);
        self.cancel.cancel();
    }

    /// Resolves once a close was asked for.
    pub fn closed(&self) -> WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// Resolves once a close was asked for; owned, to be kept across polls.
    pub fn closed_owned(&self) -> WaitForCancellationFutureOwned {
        self.cancel.clone().cancelled_owned()
    }

    /// Whether a close was asked for.
    pub fn is_closed(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Why the connection is asked to close (`going-away` if nobody said).
    pub fn reason(&self) -> CloseReason {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or(CloseReason::GoingAway)
    }
}

/// This node's streaming connections: a registry of their identities and close switches, and
/// the task that runs each one's I/O.
#[derive(Debug, Clone)]
pub struct Connections {
    inner: Arc<Registry>,
}

#[derive(Debug)]
struct Registry {
    open: Mutex<HashMap<u64, (ConnectionInfo, CloseSwitch)>>,
    active: AtomicUsize,
    next_id: AtomicU64,
    max: usize,
    closing: AtomicBool,
    drained: Notify,
}

impl Connections {
    /// An empty registry admitting at most `max` connections at once.
    pub fn new(max: usize) -> Self {
        Self {
            inner: Arc::new(Registry {
                open: Mutex::new(HashMap::new()),
                active: AtomicUsize::new(0),
                next_id: AtomicU64::new(1),
                max,
                closing: AtomicBool::new(false),
                drained: Notify::new(),
            }),
        }
    }

    /// Reserves a slot for a new connection and gives its id; `None` when the node is full or
    /// stopping.
    pub fn reserve(&self) -> Option<u64> {
        if self.inner.closing.load(Ordering::Acquire) {
            return None;
        }
        let previous = self.inner.active.fetch_add(1, Ordering::AcqRel);
        if previous >= self.inner.max {
            self.release();
            return None;
        }
        Some(self.inner.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Gives back a slot reserved for a connection that never opened.
    pub fn release(&self) {
        if self.inner.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.drained.notify_waiters();
        }
    }

    /// Runs `io` as the connection `info` (whose slot was reserved) on its own task, until it
    /// ends; `closer` closes it from outside.
    pub fn open(&self, info: ConnectionInfo, closer: CloseSwitch, io: BoxFuture<'static, ()>) {
        let id = info.id;
        if self.inner.closing.load(Ordering::Acquire) {
            closer.close(CloseReason::GoingAway);
        }
        self.inner
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, (info, closer));
        let this = self.clone();
        tokio::spawn(async move {
            io.await;
            this.inner
                .open
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            this.release();
        });
    }

    /// Asks connection `id` to close with `reason`; whether it was open.
    pub fn close(&self, id: u64, reason: CloseReason) -> bool {
        let open = self.inner.open.lock().unwrap_or_else(|e| e.into_inner());
        match open.get(&id) {
            Some((_, closer)) => {
                closer.close(reason);
                true
            }
            None => false,
        }
    }

    /// Connections open now (reserved slots included).
    pub fn active(&self) -> usize {
        self.inner.active.load(Ordering::Acquire)
    }

    /// The open connections, by id.
    pub fn list(&self) -> Vec<ConnectionInfo> {
        let open = self.inner.open.lock().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<_> = open.values().map(|(info, _)| info.clone()).collect();
        list.sort_by_key(|i| i.id);
        list
    }

    /// Refuses new connections, closes every open one with `going-away` and waits (at most
    /// twice [`CLOSE_GRACE`]) until their final frames and events are out.
    pub async fn shutdown(&self) {
        self.inner.closing.store(true, Ordering::Release);
        {
            let open = self.inner.open.lock().unwrap_or_else(|e| e.into_inner());
            for (_, closer) in open.values() {
                closer.close(CloseReason::GoingAway);
            }
        }
        let deadline = tokio::time::Instant::now() + CLOSE_GRACE * 2;
        loop {
            let drained = self.inner.drained.notified();
            if self.active() == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                tracing::warn!(
                    open = self.active(),
                    "connections still open at the end of the shutdown grace period"
                );
                return;
            }
        }
    }
}
