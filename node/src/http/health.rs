//! `/healthz` (the process answers), `/readyz` (it can serve clients: what a load balancer
//! checks) and `/readyz/control` (it also has a working control plane).
//!
//! Publishing, streams and the deliveries a node already owns need no Raft: the broker
//! carries the messages and the node's applied state says who may do what. So a node that has
//! lost its quorum stays ready for traffic, in a degraded mode — it refuses only what needs a
//! write (subscribing, admin changes, plans with limits: 503 `no-quorum`) — and `/readyz` says
//! so in its body. A node that is not a member, is stopping, or lags the leader it can reach
//! is not ready: it could decide with rights the cluster has already withdrawn. Nor is a node,
//! with a quorum, before its configuration's APIs, plans and applications are applied: until
//! then an API's credentials or its provider's signature would not yet hold on its topics.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;

/// How long readiness waits for the leader's status: well inside a load balancer's check
/// timeout (HAProxy's `timeout check 500ms` in `docker/haproxy.cfg`).
const LEADER_STATUS_TIMEOUT: Duration = Duration::from_millis(200);

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Whether the control plane works as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ControlPlane {
    Ok,
    /// No leader known or reachable, or a leader without a quorum.
    NoQuorum,
}

/// Ready for traffic: Raft runs, this node is a member, it is not stopping, and it is not
/// behind a leader it can reach by more than `raft.ready_max_lag` entries. Without a quorum it
/// stays ready, `"control_plane": "no-quorum"`.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let (body, _) = readiness(&state).await?;
    Ok(Json(body))
}

/// `/readyz` and, in addition, a working control plane (a leader with a recent quorum): the
/// strict check, for orchestration that should wait for a healthy cluster.
pub async fn readyz_control(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    match readiness(&state).await? {
        (body, ControlPlane::Ok) => Ok(Json(body)),
        (body, ControlPlane::NoQuorum) => Err(ApiError::not_ready(format!(
            "no quorum: {}",
            body["detail"].as_str().unwrap_or("no leader is known")
        ))),
    }
}

/// Ready, and — where the cluster can take writes — the configuration's APIs, plans and
/// applications applied: a node fresh from start is not sent clients before the policies its
/// configuration declares hold (an API's credentials, its provider's signature). Without a
/// quorum the node keeps serving with what its state already holds.
async fn readiness(state: &AppState) -> Result<(Value, ControlPlane), ApiError> {
    let (body, control) = readiness_of_raft(state).await?;
    if matches!(control, ControlPlane::Ok)
        && !state
            .inner
            .declared
            .load(std::sync::atomic::Ordering::Acquire)
    {
        return Err(ApiError::not_ready(
            "applying the configuration's APIs, plans and applications",
        ));
    }
    Ok((body, control))
}

async fn readiness_of_raft(state: &AppState) -> Result<(Value, ControlPlane), ApiError> {
    if state.inner.shutdown.is_cancelled() {
        return Err(ApiError::not_ready("the node is stopping"));
    }
    let control = state.control();
    let m = control.raft().metrics().borrow().clone();
    if let Err(e) = &m.running_state {
        return Err(ApiError::not_ready(format!("raft stopped: {e}")));
    }
    if m.membership_config.membership().get_node(&m.id).is_none() {
        return Err(ApiError::not_ready(
            "this node is not a member of the cluster (yet)",
        ));
    }
    let applied = m.last_applied.map_or(0, |l| l.index);
    let degraded = |detail: String| {
        let body = json!({
            "status": "ready", "node_id": m.id, "leader": m.current_leader,
            "applied_index": applied, "control_plane": "no-quorum", "detail": detail
        });
        Ok((body, ControlPlane::NoQuorum))
    };
    let Some(leader) = m.current_leader else {
        return degraded("no leader is known".to_owned());
    };
    if leader == m.id {
        let limit = state.inner.quorum_ack_limit.as_millis() as u64;
        return match m.millis_since_quorum_ack {
            Some(ms) if ms <= limit => Ok((
                json!({
                    "status": "ready", "node_id": m.id, "leader": leader,
                    "applied_index": applied, "lag": 0, "control_plane": "ok"
                }),
                ControlPlane::Ok,
            )),
            Some(ms) => degraded(format!(
                "leader without a quorum acknowledgement for {ms} ms"
            )),
            None => degraded("leader without a quorum acknowledgement".to_owned()),
        };
    }
    let Some(leader_status) = control.member_status(leader, LEADER_STATUS_TIMEOUT).await else {
        return degraded(format!("leader {leader} does not answer"));
    };
    let lag = leader_status
        .last_log_index
        .unwrap_or(0)
        .saturating_sub(applied);
    if lag > state.inner.ready_max_lag {
        return Err(ApiError::not_ready(format!(
            "catching up: {lag} entries behind the leader"
        )));
    }
    Ok((
        json!({
            "status": "ready", "node_id": m.id, "leader": leader,
            "applied_index": applied, "lag": lag, "control_plane": "ok"
        }),
        ControlPlane::Ok,
    ))
}
