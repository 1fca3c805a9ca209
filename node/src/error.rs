//! Errors of the node.

use std::net::SocketAddr;

use crate::config::ConfigError;

/// Errors of the node crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("broker: {0}")]
    Broker(#[from] eventgate_actors::broker::BrokerError),
    #[error("control plane: {0}")]
    ControlPlane(#[from] eventgate_raft_store::Error),
    #[error("{0}")]
    Internal(String),
}

/// Result of the node crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
