//! Errors of the control plane.

use crate::NodeId;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    #[error("encoding: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("decoding: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("unsupported format version {found} (this build reads up to {supported})")]
    UnsupportedFormat { found: u8, supported: u8 },
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge { size: usize, limit: usize },
    #[error("tls: {0}")]
    Tls(String),
    #[error("reading {path}: {source}")]
    ReadFile {
        path: String,
        source: std::io::Error,
    },
    #[error("quic connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("quic: {0}")]
    Quic(String),
    #[error("no leader is known")]
    NoLeader,
    #[error("node {node_id} is unreachable")]
    Unreachable { node_id: NodeId },
    #[error("request timed out after {millis} ms")]
    Timeout { millis: u64 },
    #[error("remote: {0}")]
    Remote(String),
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
