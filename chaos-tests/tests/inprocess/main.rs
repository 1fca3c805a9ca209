//! Raft nodes in one process over the fault-injecting router of `eventgate-raft-store`, each on
//! its own sled store: partitions, lossy and slow links.

mod t10_partitioned_leader;
mod t20_lossy_slow_network;
mod t30_deposed_leader_decisions;
