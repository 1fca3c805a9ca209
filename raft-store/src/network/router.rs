//! An in-process cluster transport with fault injection, for tests and simulations: nodes are
//! Raft instances in one process; links can be cut, nodes isolated, messages delayed or dropped.
//! Requests and answers go through the same encoding as on the wire.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use rand::Rng;

use super::{handle_rpc, ClusterRpc, RpcRequest, RpcResponse, TransportError};
use crate::codec;
use crate::{NodeId, NodeInfo, Raft};

#[derive(Debug, Default)]
struct Faults {
    isolated: BTreeSet<NodeId>,
    cut: BTreeSet<(NodeId, NodeId)>,
    delay: Duration,
    drop_probability: f64,
}

#[derive(Default)]
struct RouterState {
    nodes: BTreeMap<NodeId, Raft>,
    faults: Faults,
}

impl std::fmt::Debug for RouterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterState")
            .field("nodes", &self.nodes.keys().collect::<Vec<_>>())
            .field("faults", &self.faults)
            .finish()
    }
}

/// Routes RPCs between in-process Raft nodes, with faults.
#[derive(Debug, Default)]
pub struct Router {
    state: Mutex<RouterState>,
    change_timeout: Duration,
}

impl Router {
    /// A router with no nodes and no faults.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::default(),
            change_timeout: Duration::from_secs(5),
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut RouterState) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Registers a node's Raft so that others can reach it.
    pub fn add_node(&self, id: NodeId, raft: Raft) {
        self.with(|s| s.nodes.insert(id, raft));
    }

    /// Unregisters a node (it crashed): it becomes unreachable.
    pub fn remove_node(&self, id: NodeId) -> Option<Raft> {
        self.with(|s| s.nodes.remove(&id))
    }

    /// The transport as seen from node `from`.
    pub fn transport_for(self: &Arc<Self>, from: NodeId) -> Arc<RouterTransport> {
        Arc::new(RouterTransport {
            router: self.clone(),
            from,
        })
    }

    /// Cuts node `id` off from every other node, both ways.
    pub fn isolate(&self, id: NodeId) {
        self.with(|s| s.faults.isolated.insert(id));
    }

    /// Cuts the link between `a` and `b`, both ways.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        self.with(|s| {
            s.faults.cut.insert((a.min(b), a.max(b)));
        });
    }

    /// Delays every message by `delay` each way.
    pub fn set_delay(&self, delay: Duration) {
        self.with(|s| s.faults.delay = delay);
    }

    /// Drops each message with probability `p` (0.0–1.0).
    pub fn set_drop_probability(&self, p: f64) {
        self.with(|s| s.faults.drop_probability = p.clamp(0.0, 1.0));
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.with(|s| s.faults = Faults::default());
    }

    fn connected(&self, a: NodeId, b: NodeId) -> bool {
        self.with(|s| {
            !s.faults.isolated.contains(&a)
                && !s.faults.isolated.contains(&b)
                && !s.faults.cut.contains(&(a.min(b), a.max(b)))
        })
    }

    async fn carry(&self, from: NodeId, to: NodeId) -> Result<(), TransportError> {
        let (delay, drop_p) = self.with(|s| (s.faults.delay, s.faults.drop_probability));
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if !self.connected(from, to) {
            return Err(TransportError::Unreachable(format!(
                "link {from} -> {to} is cut"
            )));
        }
        if drop_p > 0.0 && rand::rng().random_bool(drop_p) {
            return Err(TransportError::Network(format!(
                "message {from} -> {to} dropped"
            )));
        }
        Ok(())
    }

    async fn deliver(
        &self,
        from: NodeId,
        to: NodeId,
        request: RpcRequest,
    ) -> Result<RpcResponse, TransportError> {
        self.carry(from, to).await?;
        let raft = self
            .with(|s| s.nodes.get(&to).cloned())
            .ok_or_else(|| TransportError::Unreachable(format!("node {to} is down")))?;
        let frame = codec::encode(&request).map_err(|e| TransportError::Network(e.to_string()))?;
        let request: RpcRequest =
            codec::decode(&frame).map_err(|e| TransportError::Network(e.to_string()))?;
        let response = handle_rpc(&raft, request, self.change_timeout).await;
        let frame = codec::encode(&response).map_err(|e| TransportError::Network(e.to_string()))?;
        self.carry(to, from).await?;
        codec::decode(&frame).map_err(|e| TransportError::Network(e.to_string()))
    }
}

/// The router as one node's transport.
#[derive(Debug)]
pub struct RouterTransport {
    router: Arc<Router>,
    from: NodeId,
}

impl ClusterRpc for RouterTransport {
    fn call<'a>(
        &'a self,
        target: NodeId,
        _node: &'a NodeInfo,
        request: RpcRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<RpcResponse, TransportError>> {
        Box::pin(async move {
            match tokio::time::timeout(timeout, self.router.deliver(self.from, target, request))
                .await
            {
                Ok(result) => result,
                Err(_) => Err(TransportError::Network(format!(
                    "no answer from node {target} within {} ms",
                    timeout.as_millis()
                ))),
            }
        })
    }
}
