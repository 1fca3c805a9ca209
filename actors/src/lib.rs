//! # eventgate-actors
//!
//! The delivery side of eventgate, free of HTTP:
//!
//! - [`broker`]: the positional `BrokerDriver` seam and its drivers, the embedded on-disk log
//!   ([`broker::embedded`]), Kafka ([`broker::kafka`]) and MQTT ([`broker::mqtt`]: no offsets,
//!   so persistent sessions for WebSub and node-local numbering for streams), with name
//!   mapping ([`broker::mapped`]) and topics spread over several brokers ([`broker::routed`]);
//! - [`websub`]: signatures, verification URLs, subscription ids, retry schedule;
//! - [`hub`]: `HubSupervisor` (one `SubscriptionActor` per owned subscription), the coordinator
//!   (heartbeats, ownership, lease expiry) and verification of intent;
//! - [`subscription`]: `SubscriptionActor`, ordered at-least-once delivery, cursor commits;
//! - [`endpoints`]: endpoint health (a replicated circuit breaker per callback origin) and the
//!   operator events topic;
//! - [`ledger`]: the delivery ledger (every attempt, per subscription, bounded), kept in the
//!   broker and indexed on every node;
//! - [`ownership`]: which live node delivers which subscription (rendezvous hashing);
//! - [`secrets`]: subscribers' secrets sealed at rest (AES-256-GCM under the operator's key);
//! - [`callback`]: the seam through which callbacks are called (HTTP lives in the node);
//! - [`control`]: the seam through which the hub and the subscription actors reach the
//!   replicated state ([`control::ControlPort`]: the node's Raft control plane, or an
//!   in-memory one in unit tests);
//! - [`stream`]: WebSocket/SSE without HTTP: resume tokens, shared frames, per-topic fan-out,
//!   per-reader catch-up and slow-consumer policy, the connection registry.
//!
//! What runs on each node:
//!
//! ```text
//! coordinator              heartbeats; on the leader: ownership and lease expiry (a task)
//! HubSupervisor            (ractor)
//! └── SubscriptionActor       one per subscription this node owns
//! TopicSupervisor          (ractor)
//! └── TopicActor              one broker consumption per topic with local readers, fanned
//!                             out through a ring of shared batches
//! Connections              registry of streaming clients, one task each (see
//!                          [`stream::connection`] for why not an actor each)
//! ```
//!
//! Dependencies point one way: `eventgate` (node) → this crate → `eventgate-raft-store`.

pub mod broker;
pub mod callback;
pub mod control;
pub mod endpoints;
pub mod hub;
pub mod ledger;
pub mod ownership;
pub mod secrets;
pub mod standard_webhooks;
pub mod stream;
pub mod subscription;
pub mod websub;

#[cfg(test)]
mod testing;
