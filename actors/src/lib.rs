//! # eventgate-actors
//!
//! Delivery logic of eventgate, kept free of HTTP so it can be tested without a network.
//!
//! Today it holds [`ownership`]: which live node delivers which WebSub subscription
//! (rendezvous hashing over live members). The ractor supervision tree of the design grows here
//! with the WebSub and streaming issues:
//!
//! ```text
//! NodeSupervisor
//! ├── ClusterActor        watches Raft metrics and membership; applies `ownership`
//! ├── HubSupervisor
//! │   └── SubscriptionActor   one per subscription this node owns
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
pub mod subscription;
pub mod websub;
