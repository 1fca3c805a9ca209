//! Clusters of real `eventgate` processes on loopback addresses, under SIGKILL, SIGTERM,
//! restarts and loss of quorum.

mod t10_replicated_writes;
mod t20_leader_sigkill_failover;
mod t30_snapshot_catch_up;
mod t40_full_cluster_restart;
mod t50_write_without_quorum;
mod t55_serving_without_quorum;
mod t60_foreign_ca_refused;
mod t70_cluster_leave;
mod t80_websub_owner_sigkill_on_kafka;
mod t85_websub_handover_on_sigterm_and_rebalance;
mod t90_sse_resume_across_nodes;
mod t95_stalled_clients_bounded_memory;

// rustfmt orders each group of declarations by name; the three-digit ones are a group of
// their own so that the list reads in numeric order.
mod t100_tansu_end_to_end;
mod t110_websub_owner_sigkill_on_mqtt;
mod t120_rate_limit_and_revocation_across_nodes;
mod t130_oauth2_tokens_across_nodes;
mod t140_portal_session_across_nodes;
mod t150_idempotent_publish_across_sigkill;
mod t160_one_trace_across_nodes;
