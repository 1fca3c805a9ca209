//! The commands of the replicated state machine, and what applying one answers.

use serde::{Deserialize, Serialize};

use crate::governance::{Access, Api, ApiKey, Application, Declared, Plan, QuotaKind};
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

/// One ownership decision of the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerMove {
    pub id: String,
    /// The owner the decision was made on (`None`: unowned).
    pub from: Option<NodeId>,
    pub to: NodeId,
    /// `true`: a planned move from a live owner, which drains and hands over
    /// ([`Command::CompleteHandover`]); `false`: `to` owns it at once (the owner is gone).
    pub drain: bool,
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
    /// Records which node owns (delivers) a subscription (an operator's override; clears a
    /// pending handover).
    AssignOwner { id: String, owner: Option<NodeId> },
    /// The leader's ownership decisions, in a batch; each applies only if the subscription's
    /// owner is still `from` (compare-and-set). `term`: the Raft term of the leadership that
    /// decided; the batch is refused when it is committed in another term (a deposed leader's
    /// decision, forwarded to its successor, is made on a view that no longer holds). 0: not
    /// checked (the in-memory control plane of tests).
    MoveOwners { term: u64, moves: Vec<OwnerMove> },
    /// The owner drained subscription `id` and committed its cursor: `to` owns it now.
    /// Applies only while that handover is pending.
    CompleteHandover {
        id: String,
        from: NodeId,
        to: NodeId,
    },
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
    /// A node is leaving (stopping, or being removed): it gets no new subscriptions, and the
    /// leader hands its subscriptions over to the others.
    NodeLeaving { node: NodeId, at_ms: u64 },
    /// A verified subscription: created or renewed (lease, secret). A new one starts its cursor
    /// at `start_offsets` (partition, offset): what was published before it is not delivered.
    /// A renewed one keeps its cursor.
    ActivateSubscription {
        subscription: Subscription,
        start_offsets: Vec<(u32, u64)>,
    },
    /// Creates or replaces an API.
    PutApi(Api),
    /// Moves an API through its lifecycle (refused when the move is not allowed).
    SetApiLifecycle {
        name: String,
        lifecycle: crate::governance::Lifecycle,
        sunset_ms: Option<u64>,
        at_ms: u64,
    },
    /// Removes an API and the applications' subscriptions to it.
    DeleteApi { name: String },
    /// Creates or replaces a plan.
    PutPlan(Plan),
    /// Removes a plan no subscription uses.
    DeletePlan { name: String },
    /// Creates or replaces an application (its keys and subscriptions are kept).
    PutApplication(Application),
    /// Removes an application with its keys and subscriptions.
    DeleteApplication { id: String },
    /// Adds an API key (stored hashed) to an application.
    AddApiKey(ApiKey),
    /// Revokes an API key on every node.
    RevokeApiKey { id: String, at_ms: u64 },
    /// Adds an application's OAuth2 client secret (stored hashed); its other usable secrets
    /// expire at `others_expire_at_ms` when given (rotation with an overlap).
    AddClientSecret {
        secret: crate::governance::ClientSecret,
        others_expire_at_ms: Option<u64>,
    },
    /// Revokes a client secret and the access tokens issued on it, on every node.
    RevokeClientSecret { id: String, at_ms: u64 },
    /// Makes `key` the cluster's token signing key if the current one is still `expected`;
    /// the previous key keeps verifying for `keep_verifying_ms`.
    RotateSigningKey {
        key: crate::governance::SigningKey,
        expected: Option<String>,
        at_ms: u64,
        keep_verifying_ms: u64,
    },
    /// Creates or replaces a portal account (email unique; one not active loses its sessions).
    PutAccount(crate::governance::Account),
    /// Opens a portal session of an active account.
    OpenSession(crate::governance::PortalSession),
    /// Ends a portal session.
    CloseSession { id: String },
    /// Creates or replaces an application's subscription to an API.
    PutAccess(Access),
    /// Ends an application's subscription to an API.
    DeleteAccess { app: String, api: String },
    /// What the configuration file declares: replaces everything an earlier one declared.
    Declare(Declared),
    /// Reserves up to `want` of an application's quota on an API in the window starting at
    /// `window_start_ms`, within `limit`; answers `Count(granted)`.
    ReserveQuota {
        app: String,
        api: String,
        kind: QuotaKind,
        window_start_ms: u64,
        limit: u64,
        want: u64,
    },
    /// A node's live stream connections per (application, API), replacing its last report.
    ReportConnections {
        node: NodeId,
        counts: Vec<((String, String), u32)>,
    },
    /// Records which (application, API) made a WebSub subscription (`None` forgets it).
    SetWebsubApplication {
        subscription: String,
        application: Option<(String, String)>,
    },
    /// [`Command::ActivateSubscription`] and, in the same entry, which (application, API)
    /// made the subscription and with which API key (`None` for a JWT); an application of
    /// `None` keeps what a renewal had. One atomic write, so a subscription is never active
    /// without the plan it counts against and the credential it lives by.
    ActivateSubscriptionFor {
        subscription: Box<Subscription>,
        start_offsets: Vec<(u32, u64)>,
        application: Option<(String, String)>,
        key: Option<String>,
    },
    /// Takes a slot of (app, API)'s `max` WebSub subscriptions for `subscription` while its
    /// verification runs (refused when none is free; a renewal needs none).
    ReserveWebsubSubscription {
        subscription: String,
        app: String,
        api: String,
        max: u32,
        now_ms: u64,
        until_ms: u64,
    },
    /// Gives back the slot a subscription held (its verification failed).
    ReleaseWebsubSubscription { subscription: String },
    /// Records an invitation to open a portal account (refused while an account has its
    /// email). Invitations expired at `invitation.created_at_ms` are dropped on the way.
    PutInvitation(crate::governance::Invitation),
    /// Withdraws an invitation.
    DeleteInvitation { id: String },
    /// Opens the account an invitation was for and ends the invitation, in one entry: refused
    /// when the invitation is gone, used, expired at `account.created_at_ms`, names another
    /// email, or an account has the email.
    AcceptInvitation {
        id: String,
        sha256: String,
        account: Box<crate::governance::Account>,
    },
    /// Reserves an idempotency key for a publish (refused `in-progress` / `answered` / `full`).
    ReserveIdempotencyKey {
        record: crate::governance::IdempotentPublish,
        at_ms: u64,
        max_keys: u64,
    },
    /// The answer of a reserved publish, kept until `expires_at_ms`.
    CompleteIdempotencyKey {
        id: String,
        node: NodeId,
        state: crate::governance::IdempotencyState,
        expires_at_ms: u64,
    },
    /// A reserved publish failed: the key is free again.
    ReleaseIdempotencyKey { id: String, node: NodeId },
    /// Adds an API key and makes the application's other live keys expire at
    /// `others_expire_at_ms` at the latest (rotation with an overlap), in one entry.
    RotateApiKey {
        key: ApiKey,
        others_expire_at_ms: u64,
    },
    /// The circuit breaker of callback endpoint `origin` opens: deliveries to it pause, the
    /// first probe after `probe_interval_ms`. Answers `Count(1)`, or `Count(0)` if it was open.
    OpenEndpoint {
        origin: String,
        at_ms: u64,
        error: String,
        probe_interval_ms: u64,
    },
    /// A probe of a paused endpoint failed: the next one in `probe_interval_ms`. Applies only
    /// while its next probe is still `expected_next_probe_at_ms` (`Count(0)` otherwise).
    EndpointProbeFailed {
        origin: String,
        expected_next_probe_at_ms: u64,
        at_ms: u64,
        error: String,
        probe_interval_ms: u64,
    },
    /// A paused endpoint answered (or an operator resumed it): deliveries go on. `Count(1)` if
    /// it was paused.
    CloseEndpoint { origin: String },
    /// A paused endpoint failed for too long: every subscription to it is disabled (kept, its
    /// cursor held) and the breaker forgotten. `Count(n)`: subscriptions disabled; `NotFound`
    /// (nothing done) unless it was paused.
    DisableEndpoint {
        origin: String,
        at_ms: u64,
        reason: String,
    },
    /// Re-enables a disabled subscription (`Count(0)`: it was not disabled).
    EnableSubscription { id: String },
}

impl Command {
    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::UpsertSubscription(_) => "upsert-subscription",
            Command::SetSubscriptionState { .. } => "set-subscription-state",
            Command::AssignOwner { .. } => "assign-owner",
            Command::MoveOwners { .. } => "move-owners",
            Command::CompleteHandover { .. } => "complete-handover",
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
            Command::PutApi(_) => "put-api",
            Command::DeleteApi { .. } => "delete-api",
            Command::SetApiLifecycle { .. } => "set-api-lifecycle",
            Command::PutPlan(_) => "put-plan",
            Command::DeletePlan { .. } => "delete-plan",
            Command::PutApplication(_) => "put-application",
            Command::DeleteApplication { .. } => "delete-application",
            Command::AddApiKey(_) => "add-api-key",
            Command::RevokeApiKey { .. } => "revoke-api-key",
            Command::AddClientSecret { .. } => "add-client-secret",
            Command::RevokeClientSecret { .. } => "revoke-client-secret",
            Command::RotateSigningKey { .. } => "rotate-signing-key",
            Command::PutAccount(_) => "put-account",
            Command::OpenSession(_) => "open-session",
            Command::CloseSession { .. } => "close-session",
            Command::PutAccess(_) => "put-access",
            Command::DeleteAccess { .. } => "delete-access",
            Command::Declare(_) => "declare",
            Command::ReserveQuota { .. } => "reserve-quota",
            Command::ReportConnections { .. } => "report-connections",
            Command::SetWebsubApplication { .. } => "set-websub-application",
            Command::ActivateSubscriptionFor { .. } => "activate-subscription-for",
            Command::ReserveWebsubSubscription { .. } => "reserve-websub-subscription",
            Command::ReleaseWebsubSubscription { .. } => "release-websub-subscription",
            Command::PutInvitation(_) => "put-invitation",
            Command::DeleteInvitation { .. } => "delete-invitation",
            Command::AcceptInvitation { .. } => "accept-invitation",
            Command::ReserveIdempotencyKey { .. } => "reserve-idempotency-key",
            Command::CompleteIdempotencyKey { .. } => "complete-idempotency-key",
            Command::ReleaseIdempotencyKey { .. } => "release-idempotency-key",
            Command::RotateApiKey { .. } => "rotate-api-key",
            Command::OpenEndpoint { .. } => "open-endpoint",
            Command::EndpointProbeFailed { .. } => "endpoint-probe-failed",
            Command::CloseEndpoint { .. } => "close-endpoint",
            Command::DisableEndpoint { .. } => "disable-endpoint",
            Command::EnableSubscription { .. } => "enable-subscription",
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
