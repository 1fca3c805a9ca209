//! N in-process Raft nodes, each on a sled store in a temporary directory, talking through one
//! fault-injecting [`Router`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use eventgate_raft_store::control::ControlPlane;
use eventgate_raft_store::network::router::Router;
use eventgate_raft_store::network::RpcNetworkFactory;
use eventgate_raft_store::state_machine::open_store;
use eventgate_raft_store::{NodeId, NodeInfo, Raft, Subscription, SubscriptionState};

/// In-process Raft nodes and their router.
#[derive(Debug)]
pub struct Cluster {
    pub router: Arc<Router>,
    pub nodes: BTreeMap<NodeId, ControlPlane>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    /// Starts `n` nodes and initializes them as one cluster of `n` voters.
    pub async fn start(n: u64, write_timeout: Duration) -> anyhow::Result<Self> {
        let router = Router::new();
        let config = Arc::new(
            openraft::Config {
                heartbeat_interval: 50,
                election_timeout_min: 200,
                election_timeout_max: 400,
                ..Default::default()
            }
            .validate()?,
        );
        let mut nodes = BTreeMap::new();
        let mut dirs = Vec::new();
        let mut members = BTreeMap::new();
        for id in 1..=n {
            let dir = tempfile::tempdir()?;
            let (log, sm) = open_store(dir.path())?;
            let reader = sm.reader();
            let transport = router.transport_for(id);
            let raft = Raft::new(
                id,
                config.clone(),
                RpcNetworkFactory::new(transport.clone()),
                log,
                sm,
            )
            .await?;
            router.add_node(id, raft.clone());
            nodes.insert(
                id,
                ControlPlane::new(id, raft, reader, transport, write_timeout),
            );
            members.insert(
                id,
                NodeInfo {
                    raft_addr: format!("in-process:{id}"),
                    http_addr: String::new(),
                },
            );
            dirs.push(dir);
        }
        nodes[&1].raft().initialize(members).await?;
        Ok(Self {
            router,
            nodes,
            _dirs: dirs,
        })
    }

    /// Waits until node `observer` sees a leader other than `not`.
    pub async fn wait_for_leader(
        &self,
        observer: NodeId,
        not: Option<NodeId>,
        timeout: Duration,
    ) -> anyhow::Result<NodeId> {
        let m = self.nodes[&observer]
            .raft()
            .wait(Some(timeout))
            .metrics(
                |m| m.current_leader.is_some() && m.current_leader != not,
                "a leader",
            )
            .await?;
        Ok(m.current_leader.expect("checked above"))
    }

    /// Waits until every node has applied the same index, at least `min_index`.
    pub async fn wait_converged(&self, min_index: u64, timeout: Duration) -> anyhow::Result<u64> {
        let target = self
            .nodes
            .values()
            .filter_map(|c| c.raft().metrics().borrow().last_log_index)
            .max()
            .unwrap_or(0)
            .max(min_index);
        for control in self.nodes.values() {
            control
                .raft()
                .wait(Some(timeout))
                .applied_index_at_least(Some(target), "converged")
                .await?;
        }
        Ok(target)
    }

    /// Subscription ids node `node` has applied.
    pub fn ids(&self, node: NodeId) -> Vec<String> {
        self.nodes[&node]
            .reader()
            .read(|s| s.subscriptions.keys().cloned().collect())
    }
}

/// An active subscription record named `id`.
pub fn subscription(id: &str) -> Subscription {
    Subscription {
        id: id.to_owned(),
        topic: "t".to_owned(),
        callback: format!("http://callback.test/{id}"),
        secret: None,
        lease_seconds: 3600,
        lease_expires_at_ms: u64::MAX,
        state: SubscriptionState::Active,
        owner: None,
        created_at_ms: 0,
        updated_at_ms: 0,
        handover_to: None,
        topic_url: None,
        signing: Default::default(),
        previous_secret: None,
    }
}
