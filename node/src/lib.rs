//! # eventgate
//!
//! The gateway node: configuration ([`config`]), the command line ([`cli`], [`run`]), the node's
//! start-up and shutdown ([`node`]), the operations every entrypoint shares ([`ingress`]: admission,
//! the one publish pipeline, stream and WebSub admission, all answering a typed
//! [`refusal::Refusal`]), the HTTP edge ([`http`]: thin adapters that translate requests into
//! those operations and refusals into problem+json, close codes and WebSub denials), and API
//! management: who may do what ([`policy`], [`auth`]) and how much ([`limits`]). Nothing outside
//! [`http`] imports from it.
//!
//! A node opens its sled store, obtains its TLS identity, binds the QUIC cluster transport,
//! starts Raft (initializing a one-voter cluster, or joining through seeds), then serves HTTP.
//! On SIGTERM it stops accepting HTTP, shuts Raft down, closes the QUIC endpoint and flushes
//! storage, in that order. It stays a member: `eventgate cluster leave` removes it.
//!
//! Dependencies point one way: this crate → `eventgate-actors` → `eventgate-raft-store`.

pub mod asyncapi;
pub mod auth;
pub mod cli;
pub mod cloudevents;
pub mod config;
pub mod error;
pub mod http;
pub mod ingest_signature;
pub mod ingress;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod oauth2;
pub mod outbound;
pub mod output;
pub mod policy;
pub mod portal;
pub mod rate;
pub mod refusal;
pub mod run;
pub mod schema;
pub mod telemetry;

pub use error::{Error, Result};
