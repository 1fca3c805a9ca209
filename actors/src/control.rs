//! The control-plane seam of the delivery actors: write a command, read the applied state,
//! watch it change, and know who leads.
//!
//! The hub, the coordinator and the subscription actors reach the replicated state only
//! through [`ControlPort`]. The node gives them its [`ControlPlane`] (Raft over QUIC); tests
//! give them a [`MemoryControl`]: the same [`ControlState::apply`](eventgate_raft_store::ControlState::apply)
//! and [`StateReader`] without a log, Raft, disk or sockets, so ordering, retries, dead
//! letters, fencing and verification of intent are tested in milliseconds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventgate_raft_store::control::{ControlError, ControlPlane};
use eventgate_raft_store::{Command, MemoryStateMachine, NodeId, Response, StateReader};
use futures_util::future::BoxFuture;

/// Who leads the cluster as this node sees it, and the voters of its membership.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leadership {
    pub leader: Option<NodeId>,
    pub voters: BTreeSet<NodeId>,
    /// For each other voter, how long ago it last answered this node's Raft traffic (`None`:
    /// never). Exact on the leader, which exchanges heartbeats with every voter.
    pub contact: BTreeMap<NodeId, Option<Duration>>,
    /// The current Raft term (0 where there is none: the in-memory control plane).
    pub term: u64,
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
        let voters: BTreeSet<NodeId> = metrics.membership_config.membership().voter_ids().collect();
        let me = ControlPlane::node_id(self);
        let contacts = self.peer_contacts();
        let contact = voters
            .iter()
            .filter(|v| **v != me)
            .map(|v| (*v, contacts.since(*v)))
            .collect();
        Leadership {
            leader: metrics.current_leader,
            voters,
            contact,
            term: metrics.current_term,
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
    /// Voters that stopped answering, and since when.
    silent: Mutex<HashMap<NodeId, tokio::time::Instant>>,
}

impl MemoryControl {
    /// A one-node cluster whose leader is `node_id`, on an empty state.
    pub fn new(node_id: NodeId) -> Self {
        let state = MemoryStateMachine::default();
        let shared = MemoryShared {
            leadership: Mutex::new(Leadership {
                leader: Some(node_id),
                voters: BTreeSet::from([node_id]),
                contact: BTreeMap::new(),
                term: 0,
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
            contact: BTreeMap::new(),
            term: 0,
        };
    }

    /// Makes voter `node` stop answering (`true`: from now on, as a killed node) or answer
    /// again (`false`). Voters answer unless told otherwise.
    pub fn set_silent(&self, node: NodeId, silent: bool) {
        let mut map = self.shared.silent.lock().unwrap_or_else(|p| p.into_inner());
        if silent {
            map.entry(node).or_insert_with(tokio::time::Instant::now);
        } else {
            map.remove(&node);
        }
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
        let mut leadership = self
            .shared
            .leadership
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let silent = self.shared.silent.lock().unwrap_or_else(|p| p.into_inner());
        leadership.contact = leadership
            .voters
            .iter()
            .filter(|v| **v != self.node_id)
            .map(|v| {
                let since = silent.get(v).map_or(Duration::ZERO, |at| at.elapsed());
                (*v, Some(since))
            })
            .collect();
        leadership
    }
}
