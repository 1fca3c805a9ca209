//! # eventgate-raft-store
//!
//! The replicated control plane of eventgate: everything that must survive the loss of a node.
//!
//! - [`TypeConfig`] — the openraft type configuration: the application data is a versioned
//!   [`Request`] carrying a typed [`Command`]; nodes are [`NodeInfo`] (QUIC and HTTP addresses).
//! - [`log_store::SledLogStore`] and [`state_machine::SledStateMachine`] — openraft storage-v2 on
//!   one sled database per node. Appends are flushed to disk before openraft is told they are
//!   durable; the state machine is one sled tree written in atomic batches and mirrored in memory
//!   for cheap reads ([`StateReader`]). Both pass `openraft::testing::Suite::test_all`.
//! - [`network`] — Raft RPC (append-entries, vote, install-snapshot) and the cluster's own
//!   requests (forwarded client writes, join, leave, status) over QUIC with mutual TLS from a
//!   cluster CA ([`tls`]), each frame a format-version byte followed by bincode 2. An in-process
//!   [`network::router::Router`] with fault injection (drop, partition, delay) serves tests.
//! - [`ControlState`] — the replicated state itself: WebSub subscriptions, their delivery cursors,
//!   retry schedules and dead letters, and node liveness. [`ControlState::apply`] is pure and
//!   deterministic: every time it needs is carried in the command.
//! - [`MemoryStateMachine`] — the same state and [`StateReader`] without a log, Raft or disk:
//!   commands applied in order as they come, for tests of the layers above.
//! - [`clock`] — the one wall clock (unix milliseconds) every crate reads.
//!
//! This crate knows nothing of HTTP or actors.

// openraft's storage and network traits fix `StorageError`/`RPCError` (over 200 bytes) as the
// error type; boxing them inside our helpers would only add conversions at every call.
#![allow(clippy::result_large_err)]

use std::io::Cursor;

pub mod clock;
pub mod codec;
pub mod command;
pub mod control;
pub mod error;
pub mod governance;
pub mod log_store;
pub mod network;
pub mod state;
pub mod state_machine;
pub mod tls;

#[cfg(test)]
mod test;

pub use command::{Command, OwnerMove, Request, Response, FORMAT_VERSION};
pub use error::{Error, Result};
pub use state::{
    callback_origin, ControlState, CursorCommit, DeadLetter, Disabled, EndpointHealth,
    NodeLiveness, PreviousSecret, RetryEntry, Signing, Subscription, SubscriptionState,
};
pub use state_machine::{MemoryStateMachine, StateReader};

/// A node's identifier within the cluster. Chosen by the operator, unique per cluster.
pub type NodeId = u64;

/// What the cluster knows about a member: where to reach it.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct NodeInfo {
    /// QUIC (UDP) address for Raft and cluster RPC, as other nodes reach it.
    pub raft_addr: String,
    /// HTTP address of the node's gateway, as clients and operators reach it.
    pub http_addr: String,
}

impl std::fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "raft={} http={}", self.raft_addr, self.http_addr)
    }
}

openraft::declare_raft_types!(
    /// openraft type configuration of eventgate's control plane.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The running Raft instance of a node.
pub type Raft = openraft::Raft<TypeConfig>;

/// Aliases of openraft's generic types, bound to [`TypeConfig`].
pub mod typ {
    use crate::{NodeId, NodeInfo, TypeConfig};

    pub type Entry = openraft::Entry<TypeConfig>;
    pub type LogId = openraft::LogId<NodeId>;
    pub type Vote = openraft::Vote<NodeId>;
    pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
    pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
    pub type Snapshot = openraft::Snapshot<TypeConfig>;
    pub type StorageError = openraft::StorageError<NodeId>;
    pub type RaftMetrics = openraft::RaftMetrics<NodeId, NodeInfo>;
    pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
    pub type RpcError<E = openraft::error::Infallible> =
        openraft::error::RPCError<NodeId, NodeInfo, RaftError<E>>;
    pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, NodeInfo>;
    pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;
    pub type ForwardToLeader = openraft::error::ForwardToLeader<NodeId, NodeInfo>;
    pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
    pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<NodeId>;
    pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
    pub type VoteResponse = openraft::raft::VoteResponse<NodeId>;
    pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
    pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<NodeId>;
    pub type InstallSnapshotError = openraft::error::InstallSnapshotError;
}

/// Installs the ring crypto provider as the process default, once.
///
/// Several crates in the graph could bring a second rustls provider; with two present,
/// `rustls::*Config::builder()` panics unless a default is installed. Call this at start-up.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
