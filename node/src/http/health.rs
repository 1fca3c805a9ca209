//! `/healthz` (the process answers) and `/readyz` (it has a leader and is caught up).

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when Raft runs, a leader is known, this node is a member, and either it is the leader
/// with a recent quorum acknowledgement or its applied index is within `raft.ready_max_lag`
/// entries of the leader's log.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let control = state.control();
    let m = control.raft().metrics().borrow().clone();
    if let Err(e) = &m.running_state {
        return Err(ApiError::not_ready(format!("raft stopped: {e}")));
    }
    let Some(leader) = m.current_leader else {
        return Err(ApiError::not_ready("no leader is known"));
    };
    if m.membership_config.membership().get_node(&m.id).is_none() {
        return Err(ApiError::not_ready(
            "this node is not a member of the cluster (yet)",
        ));
    }
    let applied = m.last_applied.map_or(0, |l| l.index);
    if leader == m.id {
        let limit = state.inner.quorum_ack_limit.as_millis() as u64;
        match m.millis_since_quorum_ack {
            Some(ms) if ms <= limit => {}
            Some(ms) => {
                return Err(ApiError::not_ready(format!(
                    "leader without a quorum acknowledgement for {ms} ms"
                )))
            }
            None => {
                return Err(ApiError::not_ready(
                    "leader without a quorum acknowledgement",
                ))
            }
        }
        return Ok(Json(json!({
            "status": "ready", "node_id": m.id, "leader": leader, "applied_index": applied, "lag": 0
        })));
    }
    let Some(leader_status) = control
        .member_status(leader, Duration::from_millis(500))
        .await
    else {
        return Err(ApiError::not_ready(format!(
            "leader {leader} does not answer"
        )));
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
    Ok(Json(json!({
        "status": "ready", "node_id": m.id, "leader": leader, "applied_index": applied, "lag": lag
    })))
}
