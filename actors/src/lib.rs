//! # eventgate-actors
//!
//! The delivery side of eventgate, free of HTTP:
//!
//! - [`broker`]: the positional `BrokerDriver` seam and its drivers, the embedded on-disk log
//!   ([`broker::embedded`]) and Kafka ([`broker::kafka`]);
//! - [`websub`]: signatures, verification URLs, subscription ids, retry schedule;
//! - [`hub`]: `HubSupervisor` (one `SubscriptionActor` per owned subscription), the coordinator
//!   (heartbeats, ownership, lease expiry) and verification of intent;
//! - [`subscription`]: `SubscriptionActor`, ordered at-least-once delivery, cursor commits;
//! - [`ownership`]: which live node delivers which subscription (rendezvous hashing);
//! - [`callback`]: the seam through which callbacks are called (HTTP lives in the node).
//!
//! The supervision tree of the design; the topic and connection branches come with WebSocket/SSE:
//!
//! ```text
//! NodeSupervisor
//! ├── coordinator          heartbeats; on the leader: ownership and lease expiry (a task)
//! ├── HubSupervisor        (built)
//! │   └── SubscriptionActor   one per subscription this node owns (built)
//! ├── TopicSupervisor
//! │   └── TopicActor          one broker consumption per topic, fanned out as shared bytes
//! └── ConnectionSupervisor
//!     └── ConnectionActor     one per WebSocket / SSE client
//! ```
//!
//! Dependencies point one way: `eventgate` (node) → this crate → `eventgate-raft-store`.

pub mod broker;
pub mod callback;
pub mod hub;
pub mod ownership;
pub mod stream;
pub mod subscription;
pub mod websub;
