//! Cluster RPC: the messages nodes exchange, the server-side dispatch, and openraft's network
//! built on any [`ClusterRpc`] transport — QUIC in production ([`quic`]), an in-process router
//! with fault injection in tests ([`router`]). Both carry the same encoded frames.

pub mod quic;
pub mod router;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use openraft::error::{NetworkError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use serde::{Deserialize, Serialize};

use crate::typ::{
    AppendEntriesRequest, AppendEntriesResponse, ClientWriteResponse, InstallSnapshotError,
    InstallSnapshotRequest, InstallSnapshotResponse, RaftError, RpcError, VoteRequest,
    VoteResponse,
};
use crate::{NodeId, NodeInfo, Raft, Request, TypeConfig};

/// Largest frame accepted on the cluster transport.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// A request from one node to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcRequest {
    AppendEntries(AppendEntriesRequest),
    Vote(VoteRequest),
    InstallSnapshot(InstallSnapshotRequest),
    /// A client write forwarded to the node believed to be the leader.
    ClientWrite(Request),
    /// A node asks to become a member (learner first, then voter). Served by the leader.
    Join {
        node_id: NodeId,
        node: NodeInfo,
    },
    /// Remove a member. Served by the leader.
    Leave {
        node_id: NodeId,
    },
    /// The receiving node's own view of Raft.
    Status,
}

/// The answer to an [`RpcRequest`], variant for variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcResponse {
    AppendEntries(Result<AppendEntriesResponse, RaftError>),
    Vote(Result<VoteResponse, RaftError>),
    InstallSnapshot(Result<InstallSnapshotResponse, RaftError<InstallSnapshotError>>),
    ClientWrite(Result<ClientWriteResponse, ClusterError>),
    Join(Result<(), ClusterError>),
    Leave(Result<(), ClusterError>),
    Status(NodeStatus),
}

/// Why a cluster operation served by the leader did not happen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ClusterError {
    #[error("not the leader (leader: {leader_id:?})")]
    ForwardToLeader {
        leader_id: Option<NodeId>,
        leader: Option<NodeInfo>,
    },
    #[error("membership change refused: {0}")]
    Membership(String),
    #[error("timed out after {millis} ms; the change may still take effect")]
    Timeout { millis: u64 },
    #[error("raft stopped: {0}")]
    Fatal(String),
}

/// One node's own view of Raft, as reported by [`RpcRequest::Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeStatus {
    pub id: NodeId,
    pub state: String,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    /// On the leader: the highest log index known to be replicated on each member.
    // JSON object keys are strings: the schema says so (the node ids are their text).
    #[schema(value_type = Option<BTreeMap<String, Option<u64>>>)]
    pub replication: Option<BTreeMap<NodeId, Option<u64>>>,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    #[schema(value_type = BTreeMap<String, NodeInfo>)]
    pub nodes: BTreeMap<NodeId, NodeInfo>,
}

impl NodeStatus {
    /// Reads the status from a Raft's current metrics.
    pub fn of(raft: &Raft) -> Self {
        let m = raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        Self {
            id: m.id,
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            replication: m.replication.as_ref().map(|r| {
                r.iter()
                    .map(|(id, log)| (*id, log.map(|l| l.index)))
                    .collect()
            }),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            nodes: membership.nodes().map(|(id, n)| (*id, n.clone())).collect(),
        }
    }
}

/// Failure to carry an RPC (as opposed to an error answered by the peer).
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The peer could not be reached at all (refused, handshake failed, cut off).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The exchange started but failed or timed out.
    #[error("network: {0}")]
    Network(String),
}

/// A transport that carries one request to a node and brings back its answer.
pub trait ClusterRpc: Send + Sync + 'static {
    fn call<'a>(
        &'a self,
        target: NodeId,
        node: &'a NodeInfo,
        request: RpcRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<RpcResponse, TransportError>>;
}

/// Serves one request on the local Raft. Client writes, joins and leaves are served only if
/// this node is the leader; otherwise they answer [`ClusterError::ForwardToLeader`] and the
/// caller retries there (see [`crate::control::ControlPlane`]).
pub async fn handle_rpc(raft: &Raft, request: RpcRequest, change_timeout: Duration) -> RpcResponse {
    match request {
        RpcRequest::AppendEntries(rpc) => {
            RpcResponse::AppendEntries(raft.append_entries(rpc).await)
        }
        RpcRequest::Vote(rpc) => RpcResponse::Vote(raft.vote(rpc).await),
        RpcRequest::InstallSnapshot(rpc) => {
            RpcResponse::InstallSnapshot(raft.install_snapshot(rpc).await)
        }
        RpcRequest::ClientWrite(req) => {
            RpcResponse::ClientWrite(crate::control::write_local(raft, req, change_timeout).await)
        }
        RpcRequest::Join { node_id, node } => {
            RpcResponse::Join(crate::control::join_local(raft, node_id, node, change_timeout).await)
        }
        RpcRequest::Leave { node_id } => {
            RpcResponse::Leave(crate::control::leave_local(raft, node_id, change_timeout).await)
        }
        RpcRequest::Status => RpcResponse::Status(NodeStatus::of(raft)),
    }
}

/// When this node last had an answer from each peer over Raft's own traffic. A leader
/// exchanges append-entries (heartbeats, every `raft.heartbeat_interval`) with every member
/// and a candidate asks every member for its vote, so on the leader this says within a few
/// heartbeats which members are alive — far sooner and more exactly than anything written
/// through the log.
#[derive(Debug, Clone, Default)]
pub struct PeerContacts {
    last: Arc<std::sync::Mutex<std::collections::HashMap<NodeId, tokio::time::Instant>>>,
}

impl PeerContacts {
    /// Notes an answer from `peer` now.
    pub fn touch(&self, peer: NodeId) {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer, tokio::time::Instant::now());
    }

    /// How long ago `peer` last answered, if it ever did.
    pub fn since(&self, peer: NodeId) -> Option<Duration> {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            .map(|at| at.elapsed())
    }
}

/// openraft's network factory over any [`ClusterRpc`] transport.
#[derive(Debug)]
pub struct RpcNetworkFactory<T: ?Sized> {
    transport: Arc<T>,
    contacts: PeerContacts,
}

impl<T: ?Sized> RpcNetworkFactory<T> {
    pub fn new(transport: Arc<T>) -> Self {
        Self::with_contacts(transport, PeerContacts::default())
    }

    /// Records every answer of a peer in `contacts`.
    pub fn with_contacts(transport: Arc<T>, contacts: PeerContacts) -> Self {
        Self {
            transport,
            contacts,
        }
    }
}

impl<T: ClusterRpc + ?Sized> RaftNetworkFactory<TypeConfig> for RpcNetworkFactory<T> {
    type Network = RpcConnection<T>;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Self::Network {
        RpcConnection {
            transport: self.transport.clone(),
            target,
            node: node.clone(),
            contacts: self.contacts.clone(),
        }
    }
}

/// openraft's connection to one peer over a [`ClusterRpc`] transport.
#[derive(Debug)]
pub struct RpcConnection<T: ?Sized> {
    transport: Arc<T>,
    target: NodeId,
    node: NodeInfo,
    contacts: PeerContacts,
}

fn transport_to_rpc<E: std::error::Error>(e: TransportError) -> RpcError<E> {
    match e {
        TransportError::Unreachable(_) => {
            openraft::error::RPCError::Unreachable(Unreachable::new(&e))
        }
        TransportError::Network(_) => openraft::error::RPCError::Network(NetworkError::new(&e)),
    }
}

fn unexpected<E: std::error::Error>(what: &str) -> RpcError<E> {
    let e = TransportError::Network(format!("unexpected response to {what}"));
    openraft::error::RPCError::Network(NetworkError::new(&e))
}

impl<T: ClusterRpc + ?Sized> RpcConnection<T> {
    async fn call(
        &self,
        request: RpcRequest,
        option: &RPCOption,
    ) -> Result<RpcResponse, TransportError> {
        let answer = self
            .transport
            .call(self.target, &self.node, request, option.hard_ttl())
            .await;
        if answer.is_ok() {
            self.contacts.touch(self.target);
        }
        answer
    }
}

impl<T: ClusterRpc + ?Sized> RaftNetwork<TypeConfig> for RpcConnection<T> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse, RpcError> {
        match self.call(RpcRequest::AppendEntries(rpc), &option).await {
            Ok(RpcResponse::AppendEntries(Ok(resp))) => Ok(resp),
            Ok(RpcResponse::AppendEntries(Err(e))) => Err(openraft::error::RPCError::RemoteError(
                RemoteError::new_with_node(self.target, self.node.clone(), e),
            )),
            Ok(_) => Err(unexpected("append-entries")),
            Err(e) => Err(transport_to_rpc(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse, RpcError<InstallSnapshotError>> {
        match self.call(RpcRequest::InstallSnapshot(rpc), &option).await {
            Ok(RpcResponse::InstallSnapshot(Ok(resp))) => Ok(resp),
            Ok(RpcResponse::InstallSnapshot(Err(e))) => {
                Err(openraft::error::RPCError::RemoteError(
                    RemoteError::new_with_node(self.target, self.node.clone(), e),
                ))
            }
            Ok(_) => Err(unexpected("install-snapshot")),
            Err(e) => Err(transport_to_rpc(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RpcError> {
        match self.call(RpcRequest::Vote(rpc), &option).await {
            Ok(RpcResponse::Vote(Ok(resp))) => Ok(resp),
            Ok(RpcResponse::Vote(Err(e))) => Err(openraft::error::RPCError::RemoteError(
                RemoteError::new_with_node(self.target, self.node.clone(), e),
            )),
            Ok(_) => Err(unexpected("vote")),
            Err(e) => Err(transport_to_rpc(e)),
        }
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // Retry an unreachable peer quickly at first (a restarted node rejoins fast), then back
        // off to 1 s.
        openraft::network::Backoff::new(
            [50u64, 100, 200, 400, 800]
                .into_iter()
                .chain(std::iter::repeat(1000))
                .map(Duration::from_millis),
        )
    }
}
