//! The hub's moving parts on each node:
//!
//! - [`HubSupervisor`] (ractor) runs one [`SubscriptionActor`] per subscription this node owns,
//!   reconciling against the replicated state whenever it changes; a failed child is restarted
//!   after a backoff.
//! - [`run_coordinator`]: every node writes a liveness heartbeat; the leader reassigns the
//!   subscriptions of nodes it has not heard from (rendezvous hashing over the live ones) and
//!   expires leases.
//! - [`process_intent`]: verification of intent for subscribe and unsubscribe requests, and
//!   denial, as the WebSub Recommendation describes; state changes only after verification.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;
use eventgate_raft_store::clock::now_ms;
use eventgate_raft_store::{Command, NodeId, Subscription, SubscriptionState};
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
    sub.owner == Some(me) && sub.state != SubscriptionState::PendingVerification
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
        s.subscriptions
            .values()
            .filter(|sub| delivers(sub, me))
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
        if state.backoff.contains_key(&id) {
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
    /// How often each node writes its liveness heartbeat.
    pub heartbeat_every: Duration,
    /// A node not heard from for this long is considered dead by the leader.
    pub dead_after: Duration,
}

impl Default for CoordinatorSettings {
    fn default() -> Self {
        Self {
            heartbeat_every: Duration::from_millis(500),
            dead_after: Duration::from_millis(1500),
        }
    }
}

/// Heartbeats, ownership and lease expiry, until `cancel`.
///
/// Liveness is judged on the leader's own clock: it notes when each node's heartbeat last
/// changed, so clock skew between nodes does not matter. A new leader gives every member a full
/// `dead_after` of grace before reassigning anything.
pub async fn run_coordinator(
    ctx: DeliveryContext,
    settings: CoordinatorSettings,
    cancel: CancellationToken,
) {
    let me = ctx.node_id;
    let mut seen: HashMap<NodeId, (u64, Instant)> = HashMap::new();
    let mut leader_since: Option<Instant> = None;
    let mut last_heartbeat: Option<Instant> = None;
    let tick = (settings.heartbeat_every / 2).max(Duration::from_millis(50));
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(tick) => {}
        }
        let now = Instant::now();
        if last_heartbeat.is_none_or(|t| now.duration_since(t) >= settings.heartbeat_every) {
            last_heartbeat = Some(now);
            let heartbeat = Command::NodeHeartbeat {
                node: me,
                at_ms: now_ms(),
            };
            // Bounded by one period: without a leader the write would wait for the whole write
            // timeout, and this loop must be free to act the moment this node becomes leader.
            match tokio::time::timeout(settings.heartbeat_every, ctx.control.write(heartbeat)).await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "heartbeat not written"),
                Err(_) => tracing::debug!("heartbeat not written in time (no leader?)"),
            }
        }
        let leadership = ctx.control.leadership();
        if leadership.leader != Some(me) {
            leader_since = None;
            seen.clear();
            continue;
        }
        let since = *leader_since.get_or_insert(now);
        let members: BTreeSet<NodeId> = leadership.voters;
        let (beats, leaving, subs, expired) = ctx.control.reader().read(|s| {
            let beats: Vec<(NodeId, u64)> =
                s.nodes.iter().map(|(n, l)| (*n, l.last_seen_ms)).collect();
            let leaving: BTreeSet<NodeId> = s
                .nodes
                .iter()
                .filter(|(_, l)| l.leaving)
                .map(|(n, _)| *n)
                .collect();
            let subs: Vec<(String, Option<NodeId>)> = s
                .subscriptions
                .values()
                .filter(|sub| sub.state != SubscriptionState::PendingVerification)
                .map(|sub| (sub.id.clone(), sub.owner))
                .collect();
            let wall = now_ms();
            let expired = s
                .subscriptions
                .values()
                .any(|sub| sub.lease_expires_at_ms <= wall);
            (beats, leaving, subs, expired)
        });
        for (node, stamp) in beats {
            let entry = seen.entry(node).or_insert((stamp, now));
            if entry.0 != stamp {
                *entry = (stamp, now);
            }
        }
        let grace = now.duration_since(since) < settings.dead_after;
        let live: Vec<NodeId> = members
            .iter()
            .copied()
            .filter(|n| !leaving.contains(n))
            .filter(|n| {
                *n == me
                    || grace
                    || seen
                        .get(n)
                        .is_some_and(|(_, at)| now.duration_since(*at) < settings.dead_after)
            })
            .collect();
        for (id, owner) in subs {
            let owner_live = owner.is_some_and(|o| live.contains(&o));
            if owner_live {
                continue;
            }
            let Some(new_owner) = owner_of(&id, live.iter().copied()) else {
                continue;
            };
            tracing::info!(subscription = %id, ?owner, new_owner, "SubscriptionOwnerAssigned");
            let command = Command::AssignOwner {
                id: id.clone(),
                owner: Some(new_owner),
            };
            if let Err(e) = ctx.control.write(command).await {
                tracing::warn!(subscription = %id, error = %e, "owner not assigned");
                break;
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
            let subscription = Subscription {
                id: id.clone(),
                topic: intent.topic.clone(),
                callback: intent.callback.clone(),
                secret: secret.as_ref().map(|s| ctx.secrets.seal(&id, s)),
                lease_seconds: *lease_seconds,
                lease_expires_at_ms: now + lease_seconds * 1000,
                state: SubscriptionState::Active,
                owner: None,
                created_at_ms: now,
                updated_at_ms: now,
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
