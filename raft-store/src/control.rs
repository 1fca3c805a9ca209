//! The control plane as the rest of the node uses it: writes that reach the leader wherever they
//! start (forwarded over the cluster transport), membership changes, and the cluster's status.
//! Every operation is bounded in time: without a quorum it fails, it never hangs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use openraft::error::RaftError;
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::network::{ClusterError, ClusterRpc, NodeStatus, PeerContacts, RpcRequest, RpcResponse};
use crate::typ::{ClientWriteError, ClientWriteResponse};
use crate::{Command, NodeId, NodeInfo, Raft, Request, Response, StateReader};

/// Why a control-plane operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControlError {
    /// No leader could be reached before the deadline: the cluster has no quorum, or this node
    /// is cut off from it.
    #[error("no leader reachable within {millis} ms (the cluster has no quorum or this node is cut off from it)")]
    NoLeader { millis: u64 },
    /// The leader accepted the write but it did not commit in time; it may still commit.
    #[error("not committed within {millis} ms (no quorum); the write may still take effect")]
    Timeout { millis: u64 },
    #[error("membership change refused: {0}")]
    Membership(String),
    #[error("raft stopped: {0}")]
    Fatal(String),
}

impl ControlError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ControlError::NoLeader { .. } | ControlError::Timeout { .. }
        )
    }
}

/// A member as seen by [`ControlPlane::cluster_status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberStatus {
    pub id: NodeId,
    pub raft_addr: String,
    pub http_addr: String,
    /// `voter` or `learner`.
    pub role: String,
    pub reachable: bool,
    /// `Leader`, `Follower`, `Candidate` or `Learner`, as the member reports itself.
    pub state: Option<String>,
    pub term: Option<u64>,
    pub applied_index: Option<u64>,
    /// Highest index the leader knows to be on this member.
    pub matched_index: Option<u64>,
    /// Leader's last log index minus this member's applied index.
    pub lag: Option<u64>,
}

/// The cluster as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterStatus {
    /// The node that answered.
    pub node_id: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub leader_last_log_index: Option<u64>,
    pub members: Vec<MemberStatus>,
}

/// A node's handle on the replicated control plane.
#[derive(Clone)]
pub struct ControlPlane {
    id: NodeId,
    raft: Raft,
    reader: StateReader,
    transport: Arc<dyn ClusterRpc>,
    timeout: Duration,
    contacts: PeerContacts,
    /// Seconds from a write's submission to its application here (successful writes).
    write_latency: Arc<std::sync::OnceLock<prometheus_client::metrics::histogram::Histogram>>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("id", &self.id)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

enum LeaderOp {
    /// Boxed: a command (a subscription record, an account) is far larger than the others.
    Write(Box<Request>),
    Join {
        node_id: NodeId,
        node: NodeInfo,
    },
    Leave {
        node_id: NodeId,
    },
}

enum LeaderOut {
    Write(ClientWriteResponse),
    Done,
}

impl ControlPlane {
    /// `timeout` bounds every operation: writes, membership changes, forwarding.
    pub fn new(
        id: NodeId,
        raft: Raft,
        reader: StateReader,
        transport: Arc<dyn ClusterRpc>,
        timeout: Duration,
    ) -> Self {
        Self {
            id,
            raft,
            reader,
            transport,
            timeout,
            contacts: PeerContacts::default(),
            write_latency: Arc::default(),
        }
    }

    /// Uses `contacts` (the ones given to this node's [`crate::RpcNetworkFactory`]) to say
    /// which peers answer ([`ControlPlane::peer_contacts`]).
    pub fn with_contacts(mut self, contacts: PeerContacts) -> Self {
        self.contacts = contacts;
        self
    }

    /// When each peer last answered this node's Raft traffic.
    pub fn peer_contacts(&self) -> &PeerContacts {
        &self.contacts
    }

    /// Observes every successful [`ControlPlane::write`]'s latency (commit and local apply)
    /// in `histogram` from now on; the first histogram given stays.
    pub fn observe_writes(&self, histogram: prometheus_client::metrics::histogram::Histogram) {
        let _ = self.write_latency.set(histogram);
    }

    pub fn node_id(&self) -> NodeId {
        self.id
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn reader(&self) -> &StateReader {
        &self.reader
    }

    /// Commits `command` through the leader, wherever it is, waits until this node has applied
    /// it too (so that a read here sees the write), and answers what applying it said.
    pub async fn write(&self, command: Command) -> Result<Response, ControlError> {
        let started = Instant::now();
        match self
            .on_leader(LeaderOp::Write(Box::new(Request::new(command))))
            .await?
        {
            LeaderOut::Write(resp) => {
                let remaining = self.timeout.saturating_sub(started.elapsed());
                self.wait_applied(resp.log_id.index, remaining.max(Duration::from_millis(100)))
                    .await;
                if let Some(h) = self.write_latency.get() {
                    h.observe(started.elapsed().as_secs_f64());
                }
                Ok(resp.data)
            }
            LeaderOut::Done => Ok(Response::Applied),
        }
    }

    /// Whether the control plane looks able to commit now or within `timeout` (an election
    /// under way): a leader is known, and if it is this node, a quorum acknowledged it within
    /// `ack_limit`. `false`: no quorum, as far as this node can tell.
    pub async fn quorum_within(&self, timeout: Duration, ack_limit: Duration) -> bool {
        let me = self.id;
        let limit = ack_limit.as_millis() as u64;
        let mut metrics = self.raft.metrics();
        let able = tokio::time::timeout(
            timeout,
            metrics.wait_for(|m| match m.current_leader {
                None => false,
                Some(l) if l == me => m.millis_since_quorum_ack.is_some_and(|ms| ms <= limit),
                Some(_) => true,
            }),
        )
        .await;
        matches!(able, Ok(Ok(_)))
    }

    /// Waits until this node has applied log index `index`, at most `timeout`. Answers whether
    /// it has.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        let mut applied = self.reader.watch_applied();
        let reached = tokio::time::timeout(
            timeout,
            applied.wait_for(|a| a.is_some_and(|l| l.index >= index)),
        )
        .await;
        matches!(reached, Ok(Ok(_)))
    }

    /// Adds `node_id` as a learner, waits for it to catch up and makes it a voter.
    pub async fn add_member(&self, node_id: NodeId, node: NodeInfo) -> Result<(), ControlError> {
        self.on_leader(LeaderOp::Join { node_id, node })
            .await
            .map(|_| ())
    }

    /// Removes `node_id` from the membership.
    pub async fn remove_member(&self, node_id: NodeId) -> Result<(), ControlError> {
        self.on_leader(LeaderOp::Leave { node_id })
            .await
            .map(|_| ())
    }

    async fn on_leader(&self, op: LeaderOp) -> Result<LeaderOut, ControlError> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let millis = self.timeout.as_millis() as u64;
        let mut metrics = self.raft.metrics();
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(ControlError::NoLeader { millis });
            }
            let remaining = deadline - now;
            let (leader, leader_node) = {
                let m = metrics.borrow_and_update();
                let leader = m.current_leader;
                let node =
                    leader.and_then(|l| m.membership_config.membership().get_node(&l).cloned());
                (leader, node)
            };
            let result = match leader {
                None => {
                    // Wait for an election to finish (or the deadline).
                    let _ = tokio::time::timeout(remaining, metrics.changed()).await;
                    continue;
                }
                Some(l) if l == self.id => self.run_local(&op, remaining).await,
                Some(l) => match leader_node {
                    Some(node) => {
                        // A leader that dies takes the call with it, silently: the moment this
                        // node learns of another leader (or of an election), ask again there
                        // instead of waiting out the deadline.
                        let mut watch = metrics.clone();
                        let moved = watch.wait_for(|m| m.current_leader != Some(l));
                        tokio::select! {
                            result = self.run_remote(l, &node, &op, remaining) => result,
                            _ = moved => {
                                tracing::debug!(leader = l, "leader changed while a call to it was under way; asking again");
                                continue;
                            }
                        }
                    }
                    None => Err(None),
                },
            };
            match result {
                Ok(out) => return Ok(out),
                Err(Some(ClusterError::ForwardToLeader { .. }) | None) => {
                    // Leadership moved or the leader is unreachable from here: wait for news
                    // of a (new) leader, briefly, and try again.
                    let wait = remaining.min(Duration::from_millis(100));
                    let _ = tokio::time::timeout(wait, metrics.changed()).await;
                }
                Err(Some(ClusterError::Timeout { .. })) => {
                    return Err(ControlError::Timeout { millis });
                }
                Err(Some(ClusterError::Membership(m))) => return Err(ControlError::Membership(m)),
                Err(Some(ClusterError::Fatal(m))) => return Err(ControlError::Fatal(m)),
            }
        }
    }

    async fn run_local(
        &self,
        op: &LeaderOp,
        remaining: Duration,
    ) -> Result<LeaderOut, Option<ClusterError>> {
        match op {
            LeaderOp::Write(req) => write_local(&self.raft, (**req).clone(), remaining)
                .await
                .map(LeaderOut::Write)
                .map_err(Some),
            LeaderOp::Join { node_id, node } => {
                join_local(&self.raft, *node_id, node.clone(), remaining)
                    .await
                    .map(|()| LeaderOut::Done)
                    .map_err(Some)
            }
            LeaderOp::Leave { node_id } => leave_local(&self.raft, *node_id, remaining)
                .await
                .map(|()| LeaderOut::Done)
                .map_err(Some),
        }
    }

    async fn run_remote(
        &self,
        leader: NodeId,
        node: &NodeInfo,
        op: &LeaderOp,
        remaining: Duration,
    ) -> Result<LeaderOut, Option<ClusterError>> {
        let request = match op {
            LeaderOp::Write(req) => RpcRequest::ClientWrite((**req).clone()),
            LeaderOp::Join { node_id, node } => RpcRequest::Join {
                node_id: *node_id,
                node: node.clone(),
            },
            LeaderOp::Leave { node_id } => RpcRequest::Leave { node_id: *node_id },
        };
        match self.transport.call(leader, node, request, remaining).await {
            Ok(RpcResponse::ClientWrite(r)) => r.map(LeaderOut::Write).map_err(Some),
            Ok(RpcResponse::Join(r) | RpcResponse::Leave(r)) => {
                r.map(|()| LeaderOut::Done).map_err(Some)
            }
            Ok(_) => Err(None),
            Err(e) => {
                tracing::debug!(leader, error = %e, "forwarding to leader failed");
                Err(None)
            }
        }
    }

    /// This node's own Raft status.
    pub fn local_status(&self) -> NodeStatus {
        NodeStatus::of(&self.raft)
    }

    /// The status of member `id` as it reports it, or `None` if it does not answer in time.
    pub async fn member_status(&self, id: NodeId, timeout: Duration) -> Option<NodeStatus> {
        if id == self.id {
            return Some(self.local_status());
        }
        let node = current_membership(&self.raft).get_node(&id).cloned()?;
        match self
            .transport
            .call(id, &node, RpcRequest::Status, timeout)
            .await
        {
            Ok(RpcResponse::Status(s)) => Some(s),
            _ => None,
        }
    }

    /// Every member's status, asked of each member directly (bounded by `per_node_timeout`).
    pub async fn cluster_status(&self, per_node_timeout: Duration) -> ClusterStatus {
        let local = self.local_status();
        let members: Vec<(NodeId, NodeInfo)> =
            local.nodes.iter().map(|(id, n)| (*id, n.clone())).collect();
        let local_ref = &local;
        let statuses = join_all(members.iter().map(|(id, node)| async move {
            if *id == self.id {
                return Some(local_ref.clone());
            }
            match self
                .transport
                .call(*id, node, RpcRequest::Status, per_node_timeout)
                .await
            {
                Ok(RpcResponse::Status(s)) => Some(s),
                _ => None,
            }
        }))
        .await;
        let by_id: BTreeMap<NodeId, NodeStatus> = members
            .iter()
            .zip(statuses)
            .filter_map(|((id, _), s)| s.map(|s| (*id, s)))
            .collect();
        let leader = local.leader;
        let leader_status = leader.and_then(|l| by_id.get(&l));
        let leader_last = leader_status.and_then(|s| s.last_log_index);
        let replication = leader_status.and_then(|s| s.replication.clone());
        let voters: BTreeSet<NodeId> = local.voters.iter().copied().collect();
        let members = members
            .into_iter()
            .map(|(id, node)| {
                let status = by_id.get(&id);
                let applied = status.and_then(|s| s.applied_index);
                MemberStatus {
                    id,
                    raft_addr: node.raft_addr,
                    http_addr: node.http_addr,
                    role: if voters.contains(&id) {
                        "voter"
                    } else {
                        "learner"
                    }
                    .to_owned(),
                    reachable: status.is_some(),
                    state: status.map(|s| s.state.clone()),
                    term: status.map(|s| s.term),
                    applied_index: applied,
                    matched_index: replication
                        .as_ref()
                        .and_then(|r| r.get(&id).copied().flatten()),
                    lag: match (leader_last, status) {
                        (Some(last), Some(_)) => Some(last.saturating_sub(applied.unwrap_or(0))),
                        _ => None,
                    },
                }
            })
            .collect();
        ClusterStatus {
            node_id: self.id,
            leader,
            term: local.term,
            leader_last_log_index: leader_last,
            members,
        }
    }
}

/// Asks the cluster reachable through `seeds` (QUIC addresses) to add this node, following
/// redirections to the leader, until `deadline`.
pub async fn join_cluster(
    transport: &dyn ClusterRpc,
    seeds: &[String],
    node_id: NodeId,
    node: NodeInfo,
    deadline: Instant,
) -> Result<(), String> {
    let mut last_error = String::from("no seed answered");
    let mut backoff = Duration::from_millis(100);
    while Instant::now() < deadline {
        for seed in seeds {
            let mut target = NodeInfo {
                raft_addr: seed.clone(),
                http_addr: String::new(),
            };
            // Follow at most a few redirections per seed.
            for _ in 0..4 {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    return Err(last_error);
                }
                let request = RpcRequest::Join {
                    node_id,
                    node: node.clone(),
                };
                match transport.call(0, &target, request, remaining).await {
                    Ok(RpcResponse::Join(Ok(()))) => return Ok(()),
                    Ok(RpcResponse::Join(Err(ClusterError::ForwardToLeader {
                        leader: Some(leader),
                        ..
                    }))) => {
                        target = leader;
                        continue;
                    }
                    Ok(RpcResponse::Join(Err(e))) => last_error = format!("{seed}: {e}"),
                    Ok(_) => last_error = format!("{seed}: unexpected answer"),
                    Err(e) => last_error = format!("{seed}: {e}"),
                }
                break;
            }
        }
        tracing::info!(error = %last_error, "join not yet accepted; retrying");
        let remaining = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(backoff.min(remaining)).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    Err(last_error)
}

fn map_write_error(e: RaftError<NodeId, ClientWriteError>) -> ClusterError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            ClusterError::ForwardToLeader {
                leader_id: f.leader_id,
                leader: f.leader_node,
            }
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ClusterError::Membership(e.to_string())
        }
        RaftError::Fatal(f) => ClusterError::Fatal(f.to_string()),
    }
}

fn timed_out(timeout: Duration) -> ClusterError {
    ClusterError::Timeout {
        millis: timeout.as_millis() as u64,
    }
}

/// Runs a membership change, failing with [`ClusterError::Timeout`] after `timeout`.
async fn bounded(
    timeout: Duration,
    work: impl std::future::Future<Output = Result<(), ClusterError>>,
) -> Result<(), ClusterError> {
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(timed_out(timeout)),
    }
}

/// Writes on this node if it is the leader; bounded by `timeout`.
pub(crate) async fn write_local(
    raft: &Raft,
    request: Request,
    timeout: Duration,
) -> Result<ClientWriteResponse, ClusterError> {
    match tokio::time::timeout(timeout, raft.client_write(request)).await {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) => Err(map_write_error(e)),
        Err(_) => Err(timed_out(timeout)),
    }
}

/// The membership this node's Raft currently applies.
fn current_membership(raft: &Raft) -> openraft::Membership<NodeId, NodeInfo> {
    raft.metrics()
        .borrow()
        .membership_config
        .membership()
        .clone()
}

fn not_leader(raft: &Raft) -> Option<ClusterError> {
    let m = raft.metrics().borrow().clone();
    if m.current_leader == Some(m.id) {
        return None;
    }
    let leader = m
        .current_leader
        .and_then(|l| m.membership_config.membership().get_node(&l).cloned());
    Some(ClusterError::ForwardToLeader {
        leader_id: m.current_leader,
        leader,
    })
}

/// Waits (at most `timeout`) until no membership change is under way — the effective
/// membership is applied and not a joint one — so that a change asked for meanwhile (two
/// nodes joining at once) queues instead of failing with "already undergoing a
/// configuration change".
async fn membership_settled(raft: &Raft, timeout: Duration) {
    let mut metrics = raft.metrics();
    let settled = metrics.wait_for(|m| {
        let stored = &m.membership_config;
        let applied = match (stored.log_id(), m.last_applied) {
            (None, _) => true,
            (Some(l), Some(a)) => l.index <= a.index,
            (Some(_), None) => false,
        };
        applied && stored.membership().get_joint_config().len() == 1
    });
    let _ = tokio::time::timeout(timeout, settled).await;
}

/// Adds a member on this node if it is the leader: learner first (waiting for it to catch
/// up), then voter. Idempotent; a known member with a new address gets the new address.
pub(crate) async fn join_local(
    raft: &Raft,
    node_id: NodeId,
    node: NodeInfo,
    timeout: Duration,
) -> Result<(), ClusterError> {
    if let Some(redirect) = not_leader(raft) {
        return Err(redirect);
    }
    let work = async {
        membership_settled(raft, timeout).await;
        let membership = current_membership(raft);
        let known = membership.get_node(&node_id).cloned();
        match known {
            None => {
                tracing::info!(node_id, %node, "adding learner");
                raft.add_learner(node_id, node, true)
                    .await
                    .map_err(map_write_error)?;
            }
            Some(existing) if existing != node => {
                tracing::info!(node_id, %node, "updating member address");
                let nodes = BTreeMap::from([(node_id, node)]);
                raft.change_membership(ChangeMembers::SetNodes(nodes), true)
                    .await
                    .map_err(map_write_error)?;
            }
            Some(_) => {}
        }
        membership_settled(raft, timeout).await;
        let is_voter = current_membership(raft).voter_ids().any(|v| v == node_id);
        if !is_voter {
            tracing::info!(node_id, "promoting learner to voter");
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), true)
                .await
                .map_err(map_write_error)?;
        }
        Ok(())
    };
    bounded(timeout, work).await
}

/// Removes a member on this node if it is the leader. Idempotent.
pub(crate) async fn leave_local(
    raft: &Raft,
    node_id: NodeId,
    timeout: Duration,
) -> Result<(), ClusterError> {
    if let Some(redirect) = not_leader(raft) {
        return Err(redirect);
    }
    let work = async {
        membership_settled(raft, timeout).await;
        let membership = current_membership(raft);
        let is_voter = membership.voter_ids().any(|v| v == node_id);
        if is_voter {
            if membership.voter_ids().count() == 1 {
                return Err(ClusterError::Membership(format!(
                    "node {node_id} is the only voter; a cluster cannot remove its last voter"
                )));
            }
            tracing::info!(node_id, "removing voter");
            raft.change_membership(
                ChangeMembers::RemoveVoters(BTreeSet::from([node_id])),
                false,
            )
            .await
            .map_err(map_write_error)?;
        } else if membership.get_node(&node_id).is_some() {
            tracing::info!(node_id, "removing learner");
            raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([node_id])), false)
                .await
                .map_err(map_write_error)?;
        }
        Ok(())
    };
    bounded(timeout, work).await
}
