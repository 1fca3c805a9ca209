//! The hub's moving parts on each node:
//!
//! - [`HubSupervisor`] (ractor) runs one [`SubscriptionActor`] per subscription this node owns,
//!   reconciling against the replicated state whenever it changes; a failed child is restarted
//!   after a backoff.
//! - [`run_coordinator`]: the leader decides who delivers each subscription — rendezvous
//!   hashing over the members that answer its Raft heartbeats. A dead owner's subscriptions
//!   move at once (from their last committed cursors); a live owner's move only by handover:
//!   it drains what is in flight, commits its exact cursor and then lets go, so rebalancing
//!   and a node leaving (SIGTERM, `cluster leave`) repeat nothing. It also expires leases.
//! - [`process_intent`]: verification of intent for subscribe and unsubscribe requests, and
//!   denial, as the WebSub Recommendation describes; state changes only after verification.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;
use eventgate_raft_store::clock::now_ms;
use eventgate_raft_store::{
    Command, NodeId, OwnerMove, PreviousSecret, Signing, Subscription, SubscriptionState,
};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::callback::{CallbackMethod, CallbackRequest};
use crate::ownership::owner_of;
use crate::subscription::{DeliveryContext, SubscriptionActor, SubscriptionArgs, SubscriptionMsg};
use crate::websub::{challenge, subscription_id, with_query};

/// How long a failed subscription actor waits before it is started again.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// How long before ending a withdrawn subscription is tried again, if its removal failed.
const ENDING_RETRY: Duration = Duration::from_secs(2);

/// Messages of [`HubSupervisor`].
#[derive(Debug)]
pub enum HubMsg {
    /// The replicated state changed (or a backoff ended): start, stop and update children.
    Reconcile,
    /// A handover of this subscription ended (done, or to be tried again).
    HandoverEnded(String),
}

struct Child {
    actor: ActorRef<SubscriptionMsg>,
    record: Subscription,
}

/// State of [`HubSupervisor`].
pub struct HubState {
    ctx: DeliveryContext,
    children: HashMap<String, Child>,
    ids: HashMap<ActorId, String>,
    backoff: HashMap<String, Instant>,
    /// Subscriptions being ended because their subscriber lost the right, until when not to
    /// try again.
    ending: HashMap<String, Instant>,
    /// Subscriptions being handed over to another node (draining, committing).
    handing: std::collections::HashSet<String>,
    watcher: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for HubState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubState")
            .field("children", &self.children.len())
            .finish_non_exhaustive()
    }
}

/// Bound on each attempt of the start-up barrier write (a heartbeat).
const BARRIER_TIMEOUT: Duration = Duration::from_secs(2);

/// Supervises this node's subscription actors.
#[derive(Debug, Default)]
pub struct HubSupervisor;

fn delivers(sub: &Subscription, me: NodeId) -> bool {
    sub.owner == Some(me)
        && sub.handover_to.is_none()
        && sub.state != SubscriptionState::PendingVerification
}

impl Actor for HubSupervisor {
    type Msg = HubMsg;
    type State = HubState;
    type Arguments = DeliveryContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut applied = ctx.control.reader().watch_applied();
        let me = myself.clone();
        let control = ctx.control.clone();
        let node = ctx.node_id;
        // Reconcile on every applied change, and every second for backoffs that ended.
        let watcher = tokio::spawn(async move {
            // A node restarting on its data directory holds the state it had when it stopped,
            // in which it may still own subscriptions that have moved since. Deliver nothing
            // until one write of ours has gone through the leader and been applied here: the
            // state then holds every reassignment committed before it.
            loop {
                let barrier = Command::NodeHeartbeat {
                    node,
                    at_ms: now_ms(),
                };
                match tokio::time::timeout(BARRIER_TIMEOUT, control.write(barrier)).await {
                    Ok(Ok(_)) => break,
                    _ if me.get_status() != ractor::ActorStatus::Running => return,
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            loop {
                if me.cast(HubMsg::Reconcile).is_err() {
                    return;
                }
                tokio::select! {
                    changed = applied.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
        Ok(HubState {
            ctx,
            children: HashMap::new(),
            ids: HashMap::new(),
            backoff: HashMap::new(),
            ending: HashMap::new(),
            handing: std::collections::HashSet::new(),
            watcher,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            HubMsg::Reconcile => reconcile(&myself, state).await,
            HubMsg::HandoverEnded(id) => {
                state.handing.remove(&id);
                reconcile(&myself, state).await;
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(id) = state.ids.remove(&cell.get_id()) {
                    state.children.remove(&id);
                }
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some(id) = state.ids.remove(&cell.get_id()) {
                    tracing::warn!(subscription = %id, %error, "SubscriptionFailed; restarting after backoff");
                    state.children.remove(&id);
                    state.backoff.insert(id, Instant::now() + RESTART_BACKOFF);
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.watcher.abort();
        for child in state.children.values() {
            // Each child commits its cursor as it stops.
            let _ = child
                .actor
                .stop_and_wait(
                    Some("hub stopping".to_owned()),
                    Some(Duration::from_secs(5)),
                )
                .await;
        }
        Ok(())
    }
}

async fn reconcile(myself: &ActorRef<HubMsg>, state: &mut HubState) {
    let me = state.ctx.node_id;
    let mut desired: HashMap<String, Subscription> = state.ctx.control.reader().read(|s| {
        // A disabled subscription is kept, its cursor held, but not delivered.
        s.subscriptions
            .values()
            .filter(|sub| delivers(sub, me) && !s.disabled.contains_key(&sub.id))
            .map(|sub| (sub.id.clone(), sub.clone()))
            .collect()
    });
    let now = Instant::now();
    state.backoff.retain(|_, until| *until > now);
    // A subscriber that lost the right to its topic is not delivered to any more: its owner
    // ends the subscription and tells it (`hub.mode=denied`). Rights are read from the applied
    // state, which every governance change reaches as an applied entry.
    if let Some(policy) = state.ctx.policy.clone() {
        state.ending.retain(|_, until| *until > now);
        desired.retain(|id, sub| match policy.withdrawn(sub) {
            None => true,
            Some(reason) => {
                if !state.ending.contains_key(id) {
                    state.ending.insert(id.clone(), now + ENDING_RETRY);
                    tokio::spawn(end_withdrawn(state.ctx.clone(), sub.clone(), reason));
                }
                false
            }
        });
    }
    // Planned moves away from this node: drain, commit the exact cursor, let go.
    let handovers: HashMap<String, NodeId> = state.ctx.control.reader().read(|s| {
        s.subscriptions
            .values()
            .filter(|sub| sub.owner == Some(me))
            .filter_map(|sub| Some((sub.id.clone(), sub.handover_to?)))
            .collect()
    });
    for (id, to) in &handovers {
        if state.handing.contains(id) {
            continue;
        }
        let actor = state.children.remove(id).map(|child| {
            state.ids.remove(&child.actor.get_id());
            child.actor
        });
        state.handing.insert(id.clone());
        tokio::spawn(hand_over(
            state.ctx.clone(),
            myself.clone(),
            actor,
            id.clone(),
            *to,
        ));
    }
    let stale: Vec<String> = state
        .children
        .keys()
        .filter(|id| !desired.contains_key(*id))
        .cloned()
        .collect();
    for id in stale {
        if let Some(child) = state.children.remove(&id) {
            state.ids.remove(&child.actor.get_id());
            child.actor.stop(Some("no longer owned here".to_owned()));
            tracing::info!(subscription = %id, "SubscriptionStopped");
            let removed = !state
                .ctx
                .control
                .reader()
                .read(|s| s.subscriptions.contains_key(&id));
            if removed {
                // The subscription ended (not moved): the broker may drop what it holds for it.
                let broker = state.ctx.broker.clone();
                tokio::spawn(async move {
                    if let Err(e) = broker.close_session(&id).await {
                        tracing::warn!(subscription = %id, error = %e, "broker session of an ended subscription not closed");
                    }
                });
            }
        }
    }
    for (id, record) in desired {
        if let Some(child) = state.children.get_mut(&id) {
            if child.record != record {
                let _ = child
                    .actor
                    .cast(SubscriptionMsg::Update(Box::new(record.clone())));
                child.record = record;
            }
            continue;
        }
        // Not while an earlier actor of it still drains (a handover called off).
        if state.backoff.contains_key(&id) || state.handing.contains(&id) {
            continue;
        }
        let args = SubscriptionArgs {
            ctx: state.ctx.clone(),
            subscription: record.clone(),
        };
        match Actor::spawn_linked(None, SubscriptionActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                state.ids.insert(actor.get_id(), id.clone());
                state.children.insert(id, Child { actor, record });
            }
            Err(e) => {
                tracing::warn!(subscription = %id, error = %e, "subscription actor did not start");
                state.backoff.insert(id, now + RESTART_BACKOFF);
            }
        }
    }
}

/// Hands subscription `id` over to node `to`: stops its actor (which lets what is in flight
/// finish, within a bound, and dispatches nothing more), commits the cursor moves it made, and
/// only then records `to` as the owner, which starts from exactly there.
async fn hand_over(
    ctx: DeliveryContext,
    hub: ActorRef<HubMsg>,
    actor: Option<ActorRef<SubscriptionMsg>>,
    id: String,
    to: NodeId,
) {
    let started = Instant::now();
    if let Some(actor) = actor {
        let _ = actor
            .stop_and_wait(
                Some(format!("handing over to node {to}")),
                Some(Duration::from_secs(10)),
            )
            .await;
    }
    if ctx.cursors.flush().await {
        let command = Command::CompleteHandover {
            id: id.clone(),
            from: ctx.node_id,
            to,
        };
        match ctx.control.write(command).await {
            Ok(eventgate_raft_store::Response::Applied) => {
                tracing::info!(subscription = %id, to, millis = started.elapsed().as_millis() as u64, "SubscriptionHandedOver");
            }
            Ok(other) => {
                tracing::info!(subscription = %id, to, answer = ?other, "handover no longer pending")
            }
            Err(e) => {
                tracing::warn!(subscription = %id, to, error = %e, "handover not recorded; trying again")
            }
        }
    } else {
        tracing::warn!(subscription = %id, to, "cursor not committed; handover tried again");
        tokio::time::sleep(RESTART_BACKOFF).await;
    }
    let _ = hub.cast(HubMsg::HandoverEnded(id));
}

/// Ends `sub`, whose subscriber may no longer read its topic: removes it (cluster-wide, with
/// its cursor and retries), drops what the broker holds for it, and tells the subscriber.
async fn end_withdrawn(ctx: DeliveryContext, sub: Subscription, reason: String) {
    let removed = ctx
        .control
        .write(Command::RemoveSubscription { id: sub.id.clone() })
        .await;
    if let Err(e) = removed {
        tracing::warn!(subscription = %sub.id, error = %e, "withdrawn subscription not removed; trying again");
        return;
    }
    tracing::info!(subscription = %sub.id, topic = %sub.topic, %reason, "SubscriptionRevoked");
    if let Err(e) = ctx.broker.close_session(&sub.id).await {
        tracing::warn!(subscription = %sub.id, error = %e, "broker session of a revoked subscription not closed");
    }
    let topic = sub.topic_url.as_deref().unwrap_or(&sub.topic);
    notify_denied(&ctx, &sub.callback, topic, &reason).await;
}

/// Tells a subscriber its subscription is refused or ended (`hub.mode=denied`, WebSub 5.2).
async fn notify_denied(ctx: &DeliveryContext, callback: &str, topic: &str, reason: &str) {
    let url = with_query(
        callback,
        &[
            ("hub.mode", "denied"),
            ("hub.topic", topic),
            ("hub.reason", reason),
        ],
    );
    let request = CallbackRequest {
        method: CallbackMethod::Get,
        url,
        headers: Vec::new(),
        body: Bytes::new(),
    };
    match ctx.client.send(request).await {
        Ok(_) => {
            tracing::info!(%topic, callback = %redacted(callback), %reason, "SubscriptionDenied")
        }
        Err(e) => {
            tracing::info!(callback = %redacted(callback), error = %e, "denial not delivered")
        }
    }
}

/// A callback URL for logs: without its query, which may carry the subscriber's tokens.
fn redacted(callback: &str) -> &str {
    callback.split(['?', '#']).next().unwrap_or(callback)
}

/// Timing of the coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    /// How often each node writes its heartbeat (seen in the state: rate-limit shares, status).
    pub heartbeat_every: Duration,
    /// A member that has not answered the leader's Raft traffic for this long is dead: its
    /// subscriptions move at once. The node sets it to Raft's maximum election timeout plus
    /// two heartbeat intervals — a member Raft itself would give up on.
    pub dead_after: Duration,
    /// How long a new leader waits for members to answer before judging any (they answered
    /// its vote request a moment ago; its first heartbeats go out at once).
    pub grace: Duration,
    /// How long a member that came (back) must keep answering before subscriptions are moved
    /// to it, so a flapping node does not pull them back and forth.
    pub settle: Duration,
    /// A handover the owner has not completed in this long is forced (the owner is alive but
    /// cannot commit: its last moves are delivered again).
    pub handover_timeout: Duration,
}

impl Default for CoordinatorSettings {
    fn default() -> Self {
        Self {
            heartbeat_every: Duration::from_millis(500),
            dead_after: Duration::from_millis(500),
            grace: Duration::from_millis(150),
            settle: Duration::from_secs(2),
            handover_timeout: Duration::from_secs(10),
        }
    }
}

/// What the leader knows of the members, kept across its ticks while it leads.
#[derive(Debug, Default)]
struct Watch {
    /// Since when each member has answered without a gap longer than `dead_after`.
    alive_since: HashMap<NodeId, Instant>,
    /// Handovers this leader asked for, and when.
    asked: HashMap<String, Instant>,
}

/// Heartbeats, ownership and lease expiry, until `cancel`.
///
/// Liveness is the leader's own observation of Raft's traffic ([`crate::control::Leadership::contact`]), not
/// anything written through the log: it needs no write to get through, so a new leader knows
/// within a heartbeat or two which members are alive — it never takes a live member's
/// subscriptions because that member's writes were stuck behind the election.
pub async fn run_coordinator(
    ctx: DeliveryContext,
    settings: CoordinatorSettings,
    cancel: CancellationToken,
) {
    tokio::join!(
        write_heartbeats(&ctx, &settings, &cancel),
        decide_owners(&ctx, &settings, &cancel)
    );
}

/// Writes this node's heartbeat every `heartbeat_every`, except while it is leaving.
async fn write_heartbeats(
    ctx: &DeliveryContext,
    settings: &CoordinatorSettings,
    cancel: &CancellationToken,
) {
    let me = ctx.node_id;
    loop {
        let leaving = ctx
            .control
            .reader()
            .read(|s| s.nodes.get(&me).is_some_and(|n| n.leaving));
        if !leaving {
            let heartbeat = Command::NodeHeartbeat {
                node: me,
                at_ms: now_ms(),
            };
            // Bounded by one period: without a leader it would wait for the write timeout.
            match tokio::time::timeout(settings.heartbeat_every, ctx.control.write(heartbeat)).await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "heartbeat not written"),
                Err(_) => tracing::debug!("heartbeat not written in time (no leader?)"),
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(settings.heartbeat_every) => {}
        }
    }
}

async fn decide_owners(
    ctx: &DeliveryContext,
    settings: &CoordinatorSettings,
    cancel: &CancellationToken,
) {
    let me = ctx.node_id;
    let tick = (settings.grace / 3).clamp(Duration::from_millis(10), Duration::from_millis(50));
    let mut leader_since: Option<Instant> = None;
    let mut watch = Watch::default();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(tick) => {}
        }
        let leadership = ctx.control.leadership();
        if leadership.leader != Some(me) {
            leader_since = None;
            watch = Watch::default();
            continue;
        }
        let now = Instant::now();
        let since = *leader_since.get_or_insert(now);
        let in_grace = now.duration_since(since) < settings.grace;
        let answers = |n: &NodeId| {
            *n == me
                || in_grace
                || leadership
                    .contact
                    .get(n)
                    .copied()
                    .flatten()
                    .is_some_and(|d| d < settings.dead_after)
        };
        let live: BTreeSet<NodeId> = leadership.voters.iter().copied().filter(answers).collect();
        watch.alive_since.retain(|n, _| live.contains(n));
        for n in &live {
            watch.alive_since.entry(*n).or_insert(now);
        }
        let (moves, expired) = ctx.control.reader().read(|s| {
            let leaving = |n: &NodeId| s.nodes.get(n).is_some_and(|l| l.leaving);
            let candidates: Vec<NodeId> = live.iter().copied().filter(|n| !leaving(n)).collect();
            let settled: Vec<NodeId> = candidates
                .iter()
                .copied()
                // Counted from when this node began to lead, for itself too: a new leader
                // moves nothing from a live owner (but a leaving one) for `settle`.
                .filter(|n| {
                    watch
                        .alive_since
                        .get(n)
                        .is_some_and(|at| now.duration_since(*at) >= settings.settle)
                })
                .collect();
            let mut moves = Vec::new();
            for sub in s.subscriptions.values() {
                if sub.state == SubscriptionState::PendingVerification {
                    continue;
                }
                let decision = decide(
                    sub,
                    &live,
                    &candidates,
                    &settled,
                    &watch.asked,
                    settings.handover_timeout,
                    now,
                );
                moves.extend(decision);
            }
            let wall = now_ms();
            let expired = s
                .subscriptions
                .values()
                .any(|sub| sub.lease_expires_at_ms <= wall);
            (moves, expired)
        });
        watch.asked.retain(|id, _| {
            ctx.control.reader().read(|s| {
                s.subscriptions
                    .get(id)
                    .is_some_and(|sub| sub.handover_to.is_some())
            })
        });
        if !moves.is_empty() {
            for m in &moves {
                if m.drain {
                    watch.asked.entry(m.id.clone()).or_insert(now);
                    tracing::info!(subscription = %m.id, from = ?m.from, to = m.to, "SubscriptionHandoverRequested");
                } else {
                    watch.asked.remove(&m.id);
                    tracing::info!(subscription = %m.id, from = ?m.from, to = m.to, "SubscriptionOwnerAssigned");
                }
            }
            let command = Command::MoveOwners {
                term: leadership.term,
                moves,
            };
            match ctx.control.write(command).await {
                Ok(eventgate_raft_store::Response::Refused { reason }) => {
                    tracing::info!(%reason, "ownership moves of an earlier leadership dropped")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "ownership moves not written"),
            }
        }
        if expired {
            match ctx
                .control
                .write(Command::ExpireLeases { now_ms: now_ms() })
                .await
            {
                Ok(r) => tracing::info!(result = ?r, "SubscriptionLeasesExpired"),
                Err(e) => tracing::warn!(error = %e, "lease expiry not written"),
            }
        }
    }
}

/// The leader's decision for one subscription, if it should move: to a live member at once
/// when its owner is gone; by handover from a live owner when rendezvous hashing over the
/// settled members (and the owner) prefers another, or when the owner is leaving.
fn decide(
    sub: &Subscription,
    live: &BTreeSet<NodeId>,
    candidates: &[NodeId],
    settled: &[NodeId],
    asked: &HashMap<String, Instant>,
    handover_timeout: Duration,
    now: Instant,
) -> Option<OwnerMove> {
    let owner = sub.owner.filter(|o| live.contains(o));
    let Some(owner) = owner else {
        // Unowned, or its owner is gone: the next owner starts from the committed cursor.
        let to = owner_of(&sub.id, candidates.iter().copied())?;
        return Some(OwnerMove {
            id: sub.id.clone(),
            from: sub.owner,
            to,
            drain: false,
        });
    };
    let owner_stays = candidates.contains(&owner);
    let mut pool: Vec<NodeId> = settled.to_vec();
    if owner_stays && !pool.contains(&owner) {
        pool.push(owner);
    }
    let desired = owner_of(&sub.id, pool.iter().copied())
        .or_else(|| owner_of(&sub.id, candidates.iter().copied()));
    match (sub.handover_to, desired) {
        // Nowhere to go (the owner leaves and nobody else is live): it stays.
        (None, None) => None,
        (None, Some(to)) if to == owner => None,
        (None, Some(to)) => Some(OwnerMove {
            id: sub.id.clone(),
            from: Some(owner),
            to,
            drain: true,
        }),
        (Some(target), desired) => {
            let overdue = asked
                .get(&sub.id)
                .is_some_and(|at| now.duration_since(*at) >= handover_timeout);
            if overdue && candidates.contains(&target) {
                // The owner is alive but does not complete: force it.
                return Some(OwnerMove {
                    id: sub.id.clone(),
                    from: Some(owner),
                    to: target,
                    drain: false,
                });
            }
            let target_fine = candidates.contains(&target) && desired == Some(target);
            match desired {
                _ if target_fine => None,
                // The target went away or the owner may stay after all: call it off.
                None => None,
                Some(to) if to == owner => Some(OwnerMove {
                    id: sub.id.clone(),
                    from: Some(owner),
                    to: owner,
                    drain: false,
                }),
                Some(to) => Some(OwnerMove {
                    id: sub.id.clone(),
                    from: Some(owner),
                    to,
                    drain: true,
                }),
            }
        }
    }
}

/// A subscriber's request to the hub, validated.
#[derive(Debug, Clone)]
pub struct Intent {
    pub mode: IntentMode,
    /// The topic name.
    pub topic: String,
    /// `hub.topic` exactly as the subscriber sent it (echoed in verification).
    pub topic_as_given: String,
    pub callback: String,
    /// The (application, API) asking, recorded with the subscription once verified so that
    /// plans can count subscriptions.
    pub application: Option<(String, String)>,
    /// The API key it asked with (none for a JWT or anonymously): the subscription lives no
    /// longer than the key.
    pub key: Option<String>,
}

/// What the subscriber asks for.
#[derive(Debug, Clone)]
pub enum IntentMode {
    Subscribe {
        lease_seconds: u64,
        secret: Option<String>,
        /// How deliveries are signed.
        signing: Signing,
    },
    Unsubscribe,
    /// The hub refuses; the subscriber is told why.
    Deny {
        reason: String,
    },
}

async fn verify(
    ctx: &DeliveryContext,
    intent: &Intent,
    mode: &str,
    lease: Option<u64>,
) -> Result<(), String> {
    let challenge = challenge();
    let lease_text = lease.map(|l| l.to_string());
    let mut params = vec![
        ("hub.mode", mode),
        ("hub.topic", intent.topic_as_given.as_str()),
        ("hub.challenge", challenge.as_str()),
    ];
    if let Some(l) = &lease_text {
        params.push(("hub.lease_seconds", l.as_str()));
    }
    let request = CallbackRequest {
        method: CallbackMethod::Get,
        url: with_query(&intent.callback, &params),
        headers: Vec::new(),
        body: Bytes::new(),
    };
    let response = ctx.client.send(request).await.map_err(|e| e.to_string())?;
    if !(200..300).contains(&response.status) {
        return Err(format!("callback answered {}", response.status));
    }
    if response.body.as_ref() != challenge.as_bytes() {
        return Err("callback did not echo the challenge".to_owned());
    }
    Ok(())
}

/// Gives back the plan's subscription slot a subscribe took when `/hub` accepted it (it
/// would otherwise be held until it expires).
async fn release_slot(ctx: &DeliveryContext, intent: &Intent, id: &str) {
    if intent.application.is_none() {
        return;
    }
    let release = Command::ReleaseWebsubSubscription {
        subscription: id.to_owned(),
    };
    if let Err(e) = ctx.control.write(release).await {
        tracing::debug!(subscription = %id, error = %e, "subscription slot not given back; it expires");
    }
}

/// What a renewal with `new_secret` keeps of the subscription's earlier secret: when the secret
/// changes, the old one signs alongside for `secret_overlap` (rotation without a gap); when it
/// does not, an overlap under way continues; without a secret there is nothing to overlap.
fn rotated_out(
    ctx: &DeliveryContext,
    id: &str,
    new_secret: Option<&str>,
    now: u64,
) -> Option<PreviousSecret> {
    let new_secret = new_secret?;
    let existing = ctx
        .control
        .reader()
        .read(|s| s.subscriptions.get(id).cloned())?;
    let sealed = existing.secret?;
    match ctx.secrets.open(id, &sealed) {
        Ok(old) if old == new_secret => existing.previous_secret.filter(|p| p.until_ms > now),
        Ok(_) => Some(PreviousSecret {
            secret: sealed,
            until_ms: now.saturating_add(ctx.settings.secret_overlap.as_millis() as u64),
        })
        .filter(|p| p.until_ms > now),
        // One that cannot be opened (a key gone) would fail every delivery: let it go.
        Err(_) => None,
    }
}

/// Carries out a subscriber's request after the hub answered `202 Accepted`: verifies intent
/// with the callback and only then changes the replicated state; or tells the subscriber of a
/// denial.
pub async fn process_intent(ctx: DeliveryContext, intent: Intent) {
    let id = subscription_id(&intent.topic, &intent.callback);
    match &intent.mode {
        IntentMode::Deny { reason } => {
            notify_denied(&ctx, &intent.callback, &intent.topic_as_given, reason).await;
        }
        IntentMode::Subscribe {
            lease_seconds,
            secret,
            signing,
        } => {
            if let Err(e) = verify(&ctx, &intent, "subscribe", Some(*lease_seconds)).await {
                tracing::info!(subscription = %id, callback = %redacted(&intent.callback), error = %e, "SubscriptionVerificationFailed");
                release_slot(&ctx, &intent, &id).await;
                return;
            }
            // The broker holds messages for the subscription from now on (MQTT: its
            // persistent session), before the subscription is recorded. A renewal keeps the
            // session its owner is connected to.
            let renewal = ctx
                .control
                .reader()
                .read(|s| s.subscriptions.contains_key(&id));
            let opened = if renewal {
                Ok(())
            } else {
                ctx.broker.open_session(&id, &intent.topic).await
            };
            if let Err(e) = opened {
                tracing::warn!(subscription = %id, error = %e, "subscription verified but the broker is unavailable");
                release_slot(&ctx, &intent, &id).await;
                return;
            }
            let start_offsets = match ctx.broker.latest_offsets(&intent.topic).await {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(subscription = %id, error = %e, "subscription verified but the broker is unavailable");
                    release_slot(&ctx, &intent, &id).await;
                    return;
                }
            };
            let now = now_ms();
            let previous_secret = rotated_out(&ctx, &id, secret.as_deref(), now);
            let subscription = Subscription {
                id: id.clone(),
                topic: intent.topic.clone(),
                callback: intent.callback.clone(),
                secret: secret.as_ref().map(|s| ctx.secrets.seal(&id, s)),
                signing: *signing,
                previous_secret,
                lease_seconds: *lease_seconds,
                lease_expires_at_ms: now + lease_seconds * 1000,
                state: SubscriptionState::Active,
                owner: None,
                created_at_ms: now,
                updated_at_ms: now,
                handover_to: None,
                topic_url: intent
                    .topic_as_given
                    .contains("://")
                    .then(|| intent.topic_as_given.clone()),
            };
            let command = Command::ActivateSubscriptionFor {
                subscription: Box::new(subscription),
                start_offsets,
                application: intent.application.clone(),
                key: intent.key.clone(),
            };
            match ctx.control.write(command).await {
                Ok(_) => {
                    tracing::info!(subscription = %id, topic = %intent.topic, lease_seconds, "SubscriptionVerified");
                }
                Err(e) => {
                    tracing::warn!(subscription = %id, error = %e, "verified subscription not recorded")
                }
            }
        }
        IntentMode::Unsubscribe => {
            let exists = ctx
                .control
                .reader()
                .read(|s| s.subscriptions.contains_key(&id));
            if !exists {
                tracing::info!(subscription = %id, "unsubscribe for an unknown subscription: nothing to do");
                return;
            }
            if let Err(e) = verify(&ctx, &intent, "unsubscribe", None).await {
                tracing::info!(subscription = %id, error = %e, "UnsubscriptionVerificationFailed");
                return;
            }
            match ctx
                .control
                .write(Command::RemoveSubscription { id: id.clone() })
                .await
            {
                Ok(_) => tracing::info!(subscription = %id, "SubscriptionRemoved"),
                Err(e) => {
                    tracing::warn!(subscription = %id, error = %e, "verified unsubscribe not recorded")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
