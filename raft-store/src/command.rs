//! The commands of the replicated state machine, and what applying one answers.

use serde::{Deserialize, Serialize};

use crate::state::{CursorCommit, DeadLetter, RetryEntry, Subscription, SubscriptionState};
use crate::NodeId;

/// Format version of [`Command`] written by this build. Bumped when a command changes meaning;
/// new variants are appended at the end and keep the version.
pub const FORMAT_VERSION: u16 = 1;

/// A write to the control plane: a typed command behind its format version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Format version of `command`; see [`FORMAT_VERSION`].
    pub format: u16,
    pub command: Command,
}

impl Request {
    /// Wraps `command` with this build's format version.
    pub fn new(command: Command) -> Self {
        Self {
            format: FORMAT_VERSION,
            command,
        }
    }
}

impl From<Command> for Request {
    fn from(command: Command) -> Self {
        Self::new(command)
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{} {}", self.format, self.command.name())
    }
}

/// Every change to the replicated state. Times are unix milliseconds chosen by the proposer so
/// that applying is deterministic on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Creates or replaces a subscription (a resubscription renews the lease and replaces the
    /// secret). Cursor, retries and dead letters of an existing id are kept.
    UpsertSubscription(Subscription),
    /// Moves a subscription to another state.
    SetSubscriptionState {
        id: String,
        state: SubscriptionState,
        at_ms: u64,
    },
    /// Records which node owns (delivers) a subscription.
    AssignOwner { id: String, owner: Option<NodeId> },
    /// Removes a subscription with its cursor, retry schedule and dead letters.
    RemoveSubscription { id: String },
    /// Removes every subscription whose lease ended at or before `now_ms`.
    ExpireLeases { now_ms: u64 },
    /// Moves cursors forward, in a batch. Only the subscription's owner may commit (fencing): a
    /// commit from any other node, or one that would move a cursor backwards, is skipped.
    CommitCursors {
        node: NodeId,
        commits: Vec<CursorCommit>,
    },
    /// Sets a cursor to any position (an operator's reset or a re-drive).
    ResetCursor {
        id: String,
        partition: u32,
        offset: u64,
    },
    /// Replaces the retry schedule of a subscription (empty clears it). Fenced like cursors.
    SetRetries {
        node: NodeId,
        id: String,
        entries: Vec<RetryEntry>,
    },
    /// Records a message that exhausted its delivery attempts.
    RecordDeadLetter(DeadLetter),
    /// Removes a dead letter (after a re-drive or by an operator).
    RemoveDeadLetter {
        id: String,
        partition: u32,
        offset: u64,
    },
    /// A node says it is alive.
    NodeHeartbeat { node: NodeId, at_ms: u64 },
    /// A node is leaving: it owns nothing from now on.
    NodeLeaving { node: NodeId, at_ms: u64 },
    /// A verified subscription: created or renewed (lease, secret). A new one starts its cursor
    /// at `start_offsets` (partition, offset): what was published before it is not delivered.
    /// A renewed one keeps its cursor.
    ActivateSubscription {
        subscription: Subscription,
        start_offsets: Vec<(u32, u64)>,
    },
}

impl Command {
    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::UpsertSubscription(_) => "upsert-subscription",
            Command::SetSubscriptionState { .. } => "set-subscription-state",
            Command::AssignOwner { .. } => "assign-owner",
            Command::RemoveSubscription { .. } => "remove-subscription",
            Command::ExpireLeases { .. } => "expire-leases",
            Command::CommitCursors { .. } => "commit-cursors",
            Command::ResetCursor { .. } => "reset-cursor",
            Command::SetRetries { .. } => "set-retries",
            Command::RecordDeadLetter(_) => "record-dead-letter",
            Command::RemoveDeadLetter { .. } => "remove-dead-letter",
            Command::NodeHeartbeat { .. } => "node-heartbeat",
            Command::NodeLeaving { .. } => "node-leaving",
            Command::ActivateSubscription { .. } => "activate-subscription",
        }
    }
}

/// What applying a command answered.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Response {
    /// Applied (or nothing to do: blank and membership entries).
    #[default]
    Applied,
    /// Applied; so many entities were affected (commits taken, leases expired).
    Count(u64),
    /// The command named something that does not exist.
    NotFound,
    /// Refused by the state machine's rules (fencing, monotonic cursors).
    Refused { reason: String },
    /// Written by a newer build than this one; not applied.
    UnsupportedFormat { found: u16 },
}
