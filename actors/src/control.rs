//! The control-plane seam of the delivery actors: write a command, read the applied state,
//! watch it change, and know who leads.
//!
//! The hub, the coordinator and the subscription actors reach the replicated state only
//! through [`ControlPort`]. The node gives them its [`ControlPlane`] (Raft over QUIC); tests
//! give them a [`MemoryControl`]: the same [`ControlState::apply`](eventgate_raft_store::ControlState::apply)
//! and [`StateReader`] without a log, Raft, disk or sockets, so ordering, retries, dead
//! letters, fencing and verification of intent are tested in milliseconds.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use eventgate_raft_store::control::{ControlError, ControlPlane};
use eventgate_raft_store::{Command, MemoryStateMachine, NodeId, Response, StateReader};
use futures_util::future::BoxFuture;

/// Who leads the cluster as this node sees it, and the voters of its membership.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leadership {
    pub leader: Option<NodeId>,
    pub voters: BTreeSet<NodeId>,
}

/// What the delivery actors need of the control plane.
pub trait ControlPort: Send + Sync + std::fmt::Debug + 'static {
    /// This node's id.
    fn node_id(&self) -> NodeId;
    /// The applied state; [`StateReader::watch_applied`] fires on every applied entry.
    fn reader(&self) -> &StateReader;
    /// Commits `command` and waits until this node has applied it.
    fn write(&self, command: Command) -> BoxFuture<'_, Result<Response, ControlError>>;
    /// The leader and voters as this node knows them now.
    fn leadership(&self) -> Leadership;
}

impl ControlPort for ControlPlane {
    fn node_id(&self) -> NodeId {
        ControlPlane::node_id(self)
    }

    fn reader(&self) -> &StateReader {
        ControlPlane::reader(self)
    }

    fn write(&self, command: Command) -> BoxFuture<'_, Result<Response, ControlError>> {
        Box::pin(ControlPlane::write(self, command))
    }

    fn leadership(&self) -> Leadership {
        let metrics = self.raft().metrics().borrow().clone();
        Leadership {
            leader: metrics.current_leader,
            voters: metrics.membership_config.membership().voter_ids().collect(),
        }
    }
}

/// An in-memory control plane: commands are applied at once, in call order, to a
/// [`MemoryStateMachine`] that several nodes' views may share ([`MemoryControl::as_node`]).
/// Every written command is kept for tests to inspect; writes can be made to fail as they do
/// without a quorum.
#[derive(Debug, Clone)]
pub struct MemoryControl {
    node_id: NodeId,
    state: MemoryStateMachine,
    reader: StateReader,
    shared: Arc<MemoryShared>,
}

#[derive(Debug, Default)]
struct MemoryShared {
    written: Mutex<Vec<(NodeId, Command)>>,
    unavailable: AtomicBool,
    leadership: Mutex<Leadership>,
}

impl MemoryControl {
    /// A one-node cluster whose leader is `node_id`, on an empty state.
    pub fn new(node_id: NodeId) -> Self {
        let state = MemoryStateMachine::default();
        let shared = MemoryShared {
            leadership: Mutex::new(Leadership {
                leader: Some(node_id),
                voters: BTreeSet::from([node_id]),
            }),
            ..MemoryShared::default()
        };
        Self {
            node_id,
            reader: state.reader(),
            state,
            shared: Arc::new(shared),
        }
    }

    /// The same cluster (state, written log, leadership) seen from node `node_id`.
    pub fn as_node(&self, node_id: NodeId) -> Self {
        Self {
            node_id,
            ..self.clone()
        }
    }

    /// Applies `command` directly (an operator's or another node's write), bypassing
    /// [`MemoryControl::set_unavailable`].
    pub fn apply(&self, command: Command) -> Response {
        let response = self.state.apply(&command);
        self.shared
            .written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((self.node_id, command));
        response
    }

    /// Makes every later write fail with [`ControlError::NoLeader`] (`true`), as without a
    /// quorum, or succeed again (`false`).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.shared.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// Sets who leads and which nodes vote.
    pub fn set_leadership(&self, leader: Option<NodeId>, voters: impl IntoIterator<Item = NodeId>) {
        *self
            .shared
            .leadership
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Leadership {
            leader,
            voters: voters.into_iter().collect(),
        };
    }

    /// Every command written so far, with the node that wrote it, in order.
    pub fn written(&self) -> Vec<(NodeId, Command)> {
        self.shared
            .written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ControlPort for MemoryControl {
    fn node_id(&self) -> NodeId {
        self.node_id
    }

    fn reader(&self) -> &StateReader {
        &self.reader
    }

    fn write(&self, command: Command) -> BoxFuture<'_, Result<Response, ControlError>> {
        Box::pin(async move {
            if self.shared.unavailable.load(Ordering::SeqCst) {
                return Err(ControlError::NoLeader { millis: 0 });
            }
            Ok(self.apply(command))
        })
    }

    fn leadership(&self) -> Leadership {
        self.shared
            .leadership
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
