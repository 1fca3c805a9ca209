//! One actor per streaming client.
//!
//! A [`ConnectionActor`] owns its connection's I/O task (built by the HTTP side: a WebSocket
//! loop, or the wait for an SSE body to end), its identity and its [`Session`], through which
//! anyone may end the connection with a [`CloseReason`]; the I/O task then sends the close
//! frame or the final SSE event. [`ConnectionSupervisor`] counts and lists connections and, on
//! shutdown, closes them all with `going-away` and waits (bounded) for their final words.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

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
pub struct Session {
    cancel: CancellationToken,
    reason: Arc<Mutex<Option<CloseReason>>>,
}

impl Session {
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

/// Messages of [`ConnectionActor`].
#[derive(Debug)]
pub enum ConnectionMsg {
    /// Close the connection with this reason.
    Close(CloseReason),
    /// The I/O task ended.
    Ended,
}

/// Arguments of [`ConnectionActor`].
pub struct ConnectionArgs {
    pub info: ConnectionInfo,
    pub session: Session,
    pub io: BoxFuture<'static, ()>,
    active: Arc<AtomicUsize>,
}

impl std::fmt::Debug for ConnectionArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionArgs")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// State of [`ConnectionActor`].
#[derive(Debug)]
pub struct ConnectionState {
    session: Session,
    task: JoinHandle<()>,
    active: Arc<AtomicUsize>,
}

/// One streaming client.
#[derive(Debug, Default)]
pub struct ConnectionActor;

impl Actor for ConnectionActor {
    type Msg = ConnectionMsg;
    type State = ConnectionState;
    type Arguments = ConnectionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let io = args.io;
        let task = tokio::spawn(async move {
            io.await;
            let _ = myself.cast(ConnectionMsg::Ended);
        });
        Ok(ConnectionState {
            session: args.session,
            task,
            active: args.active,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ConnectionMsg::Close(reason) => state.session.close(reason),
            ConnectionMsg::Ended => myself.stop(None),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.session.close(CloseReason::GoingAway);
        if tokio::time::timeout(CLOSE_GRACE, &mut state.task)
            .await
            .is_err()
        {
            state.task.abort();
        }
        state.active.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Messages of [`ConnectionSupervisor`].
#[derive(Debug)]
pub enum ConnectionSupervisorMsg {
    /// Start a connection actor.
    Open(ConnectionArgs),
    /// The open connections.
    List(RpcReplyPort<Vec<ConnectionInfo>>),
}

/// State of [`ConnectionSupervisor`].
#[derive(Debug, Default)]
pub struct ConnectionSupervisorState {
    children: std::collections::HashMap<ractor::ActorId, (ConnectionInfo, Session)>,
}

/// Supervises this node's connection actors.
#[derive(Debug, Default)]
pub struct ConnectionSupervisor;

impl Actor for ConnectionSupervisor {
    type Msg = ConnectionSupervisorMsg;
    type State = ConnectionSupervisorState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(ConnectionSupervisorState::default())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ConnectionSupervisorMsg::Open(args) => {
                let info = args.info.clone();
                let session = args.session.clone();
                let active = args.active.clone();
                match Actor::spawn_linked(None, ConnectionActor, args, myself.get_cell()).await {
                    Ok((actor, _)) => {
                        state.children.insert(actor.get_id(), (info, session));
                    }
                    Err(e) => {
                        // The I/O future was dropped with the arguments: the client sees the
                        // connection end and reconnects.
                        tracing::warn!(error = %e, "could not start a connection actor");
                        session.close(CloseReason::InternalError);
                        active.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
            ConnectionSupervisorMsg::List(reply) => {
                let mut list: Vec<_> = state.children.values().map(|(i, _)| i.clone()).collect();
                list.sort_by_key(|i| i.id);
                let _ = reply.send(list);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: ractor::SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            ractor::SupervisionEvent::ActorTerminated(cell, _, _)
            | ractor::SupervisionEvent::ActorFailed(cell, _) => {
                state.children.remove(&cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for (_, session) in state.children.values() {
            session.close(CloseReason::GoingAway);
        }
        Ok(())
    }
}

/// A handle on this node's connections. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Connections {
    supervisor: ActorRef<ConnectionSupervisorMsg>,
    active: Arc<AtomicUsize>,
    next_id: Arc<AtomicU64>,
    max: usize,
}

impl Connections {
    /// Starts the connection supervisor; at most `max` connections at once.
    pub async fn start(max: usize) -> Result<(Self, JoinHandle<()>), ractor::SpawnErr> {
        let (supervisor, handle) = Actor::spawn(None, ConnectionSupervisor, ()).await?;
        Ok((
            Self {
                supervisor,
                active: Arc::new(AtomicUsize::new(0)),
                next_id: Arc::new(AtomicU64::new(1)),
                max,
            },
            handle,
        ))
    }

    /// Reserves a slot for a new connection and gives its id; `None` when the node is full.
    pub fn reserve(&self) -> Option<u64> {
        let previous = self.active.fetch_add(1, Ordering::Relaxed);
        if previous >= self.max {
            self.active.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Gives back a slot reserved for a connection that never opened.
    pub fn release(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }

    /// Runs `io` as the connection `info` under its own actor (the slot was reserved).
    pub fn open(&self, info: ConnectionInfo, session: Session, io: BoxFuture<'static, ()>) {
        let args = ConnectionArgs {
            info,
            session: session.clone(),
            io,
            active: self.active.clone(),
        };
        if self
            .supervisor
            .cast(ConnectionSupervisorMsg::Open(args))
            .is_err()
        {
            session.close(CloseReason::GoingAway);
            self.active.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Connections open now (reserved slots included).
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// The open connections.
    pub async fn list(&self) -> Vec<ConnectionInfo> {
        match self
            .supervisor
            .call(ConnectionSupervisorMsg::List, Some(Duration::from_secs(5)))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(list)) => list,
            _ => Vec::new(),
        }
    }

    /// Closes every connection with `going-away` and waits (bounded) for their final frames.
    pub async fn shutdown(&self) {
        let _ = self
            .supervisor
            .stop_and_wait(Some("node stopping".to_owned()), Some(CLOSE_GRACE * 2))
            .await;
    }
}
