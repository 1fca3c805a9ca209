//! The replicated state and its pure, deterministic transition function.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::{Command, Response};
use crate::governance::{GovTouched, Governance};
use crate::NodeId;

/// Lifecycle of a WebSub subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubscriptionState {
    /// Accepted; intent not yet verified with the subscriber.
    PendingVerification,
    /// Verified; messages are delivered.
    Active,
    /// An unsubscribe is being verified; deliveries continue until it is.
    PendingUnsubscribe,
}

/// How deliveries to a subscription are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Signing {
    /// W3C WebSub: `X-Hub-Signature: sha256=<hex HMAC of the body>` with `hub.secret`.
    #[default]
    WebSub,
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64
    /// HMAC of id.timestamp.body>`, the key being the bytes of a `whsec_<base64>` secret.
    StandardWebhooks,
}

/// A secret being rotated out: deliveries carry its signature too until `until_ms`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousSecret {
    /// Sealed as the subscription's `secret` is.
    pub secret: String,
    pub until_ms: u64,
}

impl std::fmt::Debug for PreviousSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreviousSecret")
            .field("secret", &"<redacted>")
            .field("until_ms", &self.until_ms)
            .finish()
    }
}

/// A WebSub subscription. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Stable identifier, derived from topic and callback by the gateway.
    pub id: String,
    pub topic: String,
    pub callback: String,
    /// HMAC secret for `X-Hub-Signature`, if the subscriber gave one: sealed by the gateway
    /// when `websub.secret_key` is configured (`eventgate_actors::secrets`).
    pub secret: Option<String>,
    pub lease_seconds: u64,
    /// Unix milliseconds at which the lease ends.
    pub lease_expires_at_ms: u64,
    pub state: SubscriptionState,
    /// The node delivering to this subscription, if assigned.
    pub owner: Option<NodeId>,
    /// A planned move of ownership (rebalancing, a node leaving): the owner stops delivering,
    /// commits its exact cursor and then hands over to this node
    /// ([`Command::CompleteHandover`]), so the move repeats nothing.
    pub handover_to: Option<NodeId>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// The topic URL the subscriber named (an API's, under its base path), announced in every
    /// delivery's `Link: rel="self"`; none: `<public_url>/topics/<topic>`.
    pub topic_url: Option<String>,
    /// How deliveries are signed (chosen at subscribe time).
    pub signing: Signing,
    /// The secret before the last rotation, still signing during the overlap.
    pub previous_secret: Option<PreviousSecret>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("topic", &self.topic)
            .field("callback", &self.callback)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("lease_seconds", &self.lease_seconds)
            .field("lease_expires_at_ms", &self.lease_expires_at_ms)
            .field("state", &self.state)
            .field("owner", &self.owner)
            .field("handover_to", &self.handover_to)
            .field("created_at_ms", &self.created_at_ms)
            .field("updated_at_ms", &self.updated_at_ms)
            .field("topic_url", &self.topic_url)
            .field("signing", &self.signing)
            .field("previous_secret", &self.previous_secret)
            .finish()
    }
}

/// One cursor move: the next offset to deliver on a partition of a subscription's topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorCommit {
    pub id: String,
    pub partition: u32,
    pub offset: u64,
}

/// A delivery waiting for its next attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryEntry {
    pub partition: u32,
    pub offset: u64,
    /// Attempts made so far.
    pub attempt: u32,
    pub next_attempt_at_ms: u64,
    pub first_attempt_at_ms: u64,
    pub last_error: Option<String>,
}

/// A message that could not be delivered within the configured attempts or age.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: String,
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub attempts: u32,
    pub last_error: String,
    pub at_ms: u64,
}

/// A callback endpoint (an origin: scheme, host and port) whose deliveries the circuit breaker
/// paused: no attempts to it but probes, one at `next_probe_at_ms`, at growing intervals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointHealth {
    pub origin: String,
    /// When the breaker opened: the outage's start as the gateway saw it.
    pub opened_at_ms: u64,
    /// Failed attempts and probes since it opened.
    pub failures: u64,
    pub last_error: String,
    pub probe_interval_ms: u64,
    pub next_probe_at_ms: u64,
}

/// Why a subscription is disabled: no deliveries (its cursor holds) until it is re-enabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disabled {
    pub at_ms: u64,
    pub reason: String,
}

/// The origin of a callback URL, `scheme://host[:port]` lower-cased, without a default port
/// or user info: what the circuit breaker tracks. Anything unreadable is its own origin.
pub fn callback_origin(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host_port = host_port.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => Some(":80"),
        "https" => Some(":443"),
        _ => None,
    };
    let host_port = match default_port {
        Some(port) if host_port.ends_with(port) => &host_port[..host_port.len() - port.len()],
        _ => &host_port,
    };
    format!("{scheme}://{host_port}")
}

/// What the cluster last heard of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLiveness {
    pub last_seen_ms: u64,
    pub leaving: bool,
}

/// The replicated state of the control plane.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlState {
    pub subscriptions: BTreeMap<String, Subscription>,
    /// Subscription id → partition → next offset to deliver.
    pub cursors: BTreeMap<String, BTreeMap<u32, u64>>,
    /// Subscription id → deliveries awaiting retry.
    pub retries: BTreeMap<String, Vec<RetryEntry>>,
    /// (subscription id, partition, offset) → dead letter.
    pub dead_letters: BTreeMap<(String, u32, u64), DeadLetter>,
    pub nodes: BTreeMap<NodeId, NodeLiveness>,
    /// APIs, plans, applications, keys and quota.
    pub governance: Governance,
    /// Callback endpoints (origins) paused by the circuit breaker; an origin absent is healthy.
    pub endpoints: BTreeMap<String, EndpointHealth>,
    /// Subscriptions disabled after a long outage of their endpoint (kept, cursor held).
    pub disabled: BTreeMap<String, Disabled>,
}

/// An entity touched by a command, so that a persistent store can write just what changed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Touched {
    Subscription(String),
    Cursor(String),
    Retries(String),
    DeadLetter(String, u32, u64),
    Node(NodeId),
    Gov(GovTouched),
    Endpoint(String),
    Disabled(String),
}

impl ControlState {
    /// Applies `command`, records in `touched` what it changed and answers.
    pub fn apply(&mut self, command: &Command, touched: &mut Vec<Touched>) -> Response {
        match command {
            Command::UpsertSubscription(sub) => {
                let mut sub = sub.clone();
                if let Some(existing) = self.subscriptions.get(&sub.id) {
                    // Keep what the delivery side owns; the writer may not know it.
                    sub.created_at_ms = existing.created_at_ms;
                    if sub.owner.is_none() {
                        sub.owner = existing.owner;
                        sub.handover_to = existing.handover_to;
                    }
                }
                touched.push(Touched::Subscription(sub.id.clone()));
                self.subscriptions.insert(sub.id.clone(), sub);
                Response::Applied
            }
            Command::SetSubscriptionState { id, state, at_ms } => {
                match self.subscriptions.get_mut(id) {
                    Some(sub) => {
                        sub.state = *state;
                        sub.updated_at_ms = *at_ms;
                        touched.push(Touched::Subscription(id.clone()));
                        Response::Applied
                    }
                    None => Response::NotFound,
                }
            }
            Command::AssignOwner { id, owner } => match self.subscriptions.get_mut(id) {
                Some(sub) => {
                    sub.owner = *owner;
                    sub.handover_to = None;
                    touched.push(Touched::Subscription(id.clone()));
                    Response::Applied
                }
                None => Response::NotFound,
            },
            Command::MoveOwners { moves, .. } => {
                let mut taken = 0;
                for m in moves {
                    let Some(sub) = self.subscriptions.get_mut(&m.id) else {
                        continue;
                    };
                    // Compare-and-set: a move decided on a view that is out of date is skipped.
                    // `to == from` without drain calls off a pending handover.
                    if sub.owner != m.from || (m.drain && m.from == Some(m.to)) {
                        continue;
                    }
                    if m.drain && m.from.is_some() {
                        if sub.handover_to == Some(m.to) {
                            continue;
                        }
                        sub.handover_to = Some(m.to);
                    } else {
                        sub.owner = Some(m.to);
                        sub.handover_to = None;
                    }
                    taken += 1;
                    touched.push(Touched::Subscription(m.id.clone()));
                }
                Response::Count(taken)
            }
            Command::CompleteHandover { id, from, to } => match self.subscriptions.get_mut(id) {
                Some(sub) if sub.owner == Some(*from) && sub.handover_to == Some(*to) => {
                    sub.owner = Some(*to);
                    sub.handover_to = None;
                    touched.push(Touched::Subscription(id.clone()));
                    Response::Applied
                }
                Some(_) => Response::Refused {
                    reason: format!(
                        "no handover of subscription {id} from node {from} to node {to} is pending"
                    ),
                },
                None => Response::NotFound,
            },
            Command::RemoveSubscription { id } => {
                if self.remove_subscription(id, touched) {
                    Response::Applied
                } else {
                    Response::NotFound
                }
            }
            Command::ExpireLeases { now_ms } => {
                let expired: Vec<String> = self
                    .subscriptions
                    .values()
                    .filter(|s| s.lease_expires_at_ms <= *now_ms)
                    .map(|s| s.id.clone())
                    .collect();
                for id in &expired {
                    self.remove_subscription(id, touched);
                }
                Response::Count(expired.len() as u64)
            }
            Command::CommitCursors { node, commits } => {
                let mut taken = 0;
                for commit in commits {
                    let owned = self
                        .subscriptions
                        .get(&commit.id)
                        .is_some_and(|s| s.owner == Some(*node));
                    if !owned {
                        continue;
                    }
                    let cursor = self.cursors.entry(commit.id.clone()).or_default();
                    let current = cursor.entry(commit.partition).or_insert(0);
                    if commit.offset > *current {
                        *current = commit.offset;
                        taken += 1;
                        touched.push(Touched::Cursor(commit.id.clone()));
                    }
                }
                Response::Count(taken)
            }
            Command::ResetCursor {
                id,
                partition,
                offset,
            } => {
                if !self.subscriptions.contains_key(id) {
                    return Response::NotFound;
                }
                self.cursors
                    .entry(id.clone())
                    .or_default()
                    .insert(*partition, *offset);
                touched.push(Touched::Cursor(id.clone()));
                Response::Applied
            }
            Command::SetRetries { node, id, entries } => match self.subscriptions.get(id) {
                None => Response::NotFound,
                Some(sub) if sub.owner != Some(*node) => Response::Refused {
                    reason: format!("node {node} does not own subscription {id}"),
                },
                Some(_) => {
                    if entries.is_empty() {
                        self.retries.remove(id);
                    } else {
                        self.retries.insert(id.clone(), entries.clone());
                    }
                    touched.push(Touched::Retries(id.clone()));
                    Response::Applied
                }
            },
            Command::RecordDeadLetter(letter) => {
                let key = (letter.id.clone(), letter.partition, letter.offset);
                touched.push(Touched::DeadLetter(key.0.clone(), key.1, key.2));
                self.dead_letters.insert(key, letter.clone());
                Response::Applied
            }
            Command::RemoveDeadLetter {
                id,
                partition,
                offset,
            } => {
                let key = (id.clone(), *partition, *offset);
                if self.dead_letters.remove(&key).is_some() {
                    touched.push(Touched::DeadLetter(key.0, key.1, key.2));
                    Response::Applied
                } else {
                    Response::NotFound
                }
            }
            Command::NodeHeartbeat { node, at_ms } => {
                let entry = self.nodes.entry(*node).or_insert(NodeLiveness {
                    last_seen_ms: 0,
                    leaving: false,
                });
                entry.last_seen_ms = entry.last_seen_ms.max(*at_ms);
                entry.leaving = false;
                touched.push(Touched::Node(*node));
                Response::Applied
            }
            Command::ActivateSubscription {
                subscription,
                start_offsets,
            } => self.activate(subscription, start_offsets, touched),
            Command::OpenEndpoint {
                origin,
                at_ms,
                error,
                probe_interval_ms,
            } => {
                if self.endpoints.contains_key(origin) {
                    return Response::Count(0);
                }
                self.endpoints.insert(
                    origin.clone(),
                    EndpointHealth {
                        origin: origin.clone(),
                        opened_at_ms: *at_ms,
                        failures: 1,
                        last_error: error.clone(),
                        probe_interval_ms: *probe_interval_ms,
                        next_probe_at_ms: at_ms + probe_interval_ms,
                    },
                );
                touched.push(Touched::Endpoint(origin.clone()));
                Response::Count(1)
            }
            Command::EndpointProbeFailed {
                origin,
                expected_next_probe_at_ms,
                at_ms,
                error,
                probe_interval_ms,
            } => match self.endpoints.get_mut(origin) {
                // Compare-and-set: of probes made at once by several nodes, one moves it on.
                Some(e) if e.next_probe_at_ms == *expected_next_probe_at_ms => {
                    e.failures += 1;
                    e.last_error = error.clone();
                    e.probe_interval_ms = *probe_interval_ms;
                    e.next_probe_at_ms = at_ms + probe_interval_ms;
                    touched.push(Touched::Endpoint(origin.clone()));
                    Response::Count(1)
                }
                Some(_) => Response::Count(0),
                None => Response::NotFound,
            },
            Command::CloseEndpoint { origin } => {
                if self.endpoints.remove(origin).is_some() {
                    touched.push(Touched::Endpoint(origin.clone()));
                    Response::Count(1)
                } else {
                    Response::Count(0)
                }
            }
            Command::DisableEndpoint {
                origin,
                at_ms,
                reason,
            } => {
                if self.endpoints.remove(origin).is_none() {
                    return Response::NotFound;
                }
                touched.push(Touched::Endpoint(origin.clone()));
                let ids: Vec<String> = self
                    .subscriptions
                    .values()
                    .filter(|s| callback_origin(&s.callback) == *origin)
                    .filter(|s| !self.disabled.contains_key(&s.id))
                    .map(|s| s.id.clone())
                    .collect();
                for id in &ids {
                    self.disabled.insert(
                        id.clone(),
                        Disabled {
                            at_ms: *at_ms,
                            reason: reason.clone(),
                        },
                    );
                    touched.push(Touched::Disabled(id.clone()));
                }
                Response::Count(ids.len() as u64)
            }
            Command::EnableSubscription { id } => {
                if !self.subscriptions.contains_key(id) {
                    return Response::NotFound;
                }
                if self.disabled.remove(id).is_none() {
                    return Response::Count(0);
                }
                touched.push(Touched::Disabled(id.clone()));
                Response::Count(1)
            }
            Command::ActivateSubscriptionFor {
                subscription,
                start_offsets,
                application,
                key,
            } => {
                let response = self.activate(subscription, start_offsets, touched);
                if let Some(application) = application {
                    let mut gov = Vec::new();
                    let g = &mut self.governance;
                    g.set_websub_application(&subscription.id, Some(application.clone()), &mut gov);
                    g.set_websub_key(&subscription.id, key.clone(), &mut gov);
                    g.release_websub(&subscription.id, &mut gov);
                    touched.extend(gov.into_iter().map(Touched::Gov));
                }
                response
            }
            Command::NodeLeaving { node, at_ms } => {
                self.nodes.insert(
                    *node,
                    NodeLiveness {
                        last_seen_ms: *at_ms,
                        leaving: true,
                    },
                );
                touched.push(Touched::Node(*node));
                // Its subscriptions stay with it until the leader hands them over (drained, at
                // their exact cursors), or, if it is gone already, reassigns them.
                let owned = self
                    .subscriptions
                    .values()
                    .filter(|sub| sub.owner == Some(*node))
                    .count();
                let mut gov = Vec::new();
                self.governance.forget_node(*node, &mut gov);
                touched.extend(gov.into_iter().map(Touched::Gov));
                Response::Count(owned as u64)
            }
            other => {
                let mut gov = Vec::new();
                let response = self.apply_governance(other, &mut gov);
                touched.extend(gov.into_iter().map(Touched::Gov));
                response
            }
        }
    }

    fn apply_governance(&mut self, command: &Command, t: &mut Vec<GovTouched>) -> Response {
        let g = &mut self.governance;
        match command {
            Command::PutApi(api) => g.put_api(api, t),
            Command::DeleteApi { name } => g.delete_api(name, t),
            Command::SetApiLifecycle {
                name,
                lifecycle,
                sunset_ms,
                at_ms,
            } => {
                // Anonymous subscribers through an API's base path are known by the topic URL
                // they named.
                let paths = self.subscriptions.values().filter_map(|s| {
                    let url = s.topic_url.as_deref()?;
                    let rest = url.split_once("://").map_or(url, |(_, r)| r);
                    rest.find('/').map(|i| &rest[i..])
                });
                g.set_lifecycle(name, *lifecycle, *sunset_ms, *at_ms, paths, t)
            }
            Command::PutPlan(plan) => g.put_plan(plan, t),
            Command::DeletePlan { name } => g.delete_plan(name, t),
            Command::PutApplication(app) => g.put_application(app, t),
            Command::DeleteApplication { id } => g.delete_application(id, t),
            Command::AddApiKey(key) => g.add_key(key, t),
            Command::RevokeApiKey { id, at_ms } => g.revoke_key(id, *at_ms, t),
            Command::AddClientSecret {
                secret,
                others_expire_at_ms,
            } => g.add_client_secret(secret, *others_expire_at_ms, t),
            Command::RevokeClientSecret { id, at_ms } => g.revoke_client_secret(id, *at_ms, t),
            Command::PutAccount(account) => g.put_account(account, t),
            Command::OpenSession(session) => g.open_session(session, t),
            Command::CloseSession { id } => g.close_session(id, t),
            Command::PutInvitation(invitation) => g.put_invitation(invitation, t),
            Command::DeleteInvitation { id } => g.delete_invitation(id, t),
            Command::AcceptInvitation {
                id,
                sha256,
                account,
            } => g.accept_invitation(id, sha256, account, t),
            Command::ReserveIdempotencyKey {
                record,
                at_ms,
                max_keys,
            } => g.reserve_idempotency(record, *at_ms, *max_keys, t),
            Command::CompleteIdempotencyKey {
                id,
                node,
                state,
                expires_at_ms,
            } => g.complete_idempotency(id, *node, state, *expires_at_ms, t),
            Command::ReleaseIdempotencyKey { id, node } => g.release_idempotency(id, *node, t),
            Command::RotateApiKey {
                key,
                others_expire_at_ms,
            } => g.rotate_key(key, *others_expire_at_ms, t),
            Command::RotateSigningKey {
                key,
                expected,
                at_ms,
                keep_verifying_ms,
            } => g.rotate_signing_key(key, expected.as_deref(), *at_ms, *keep_verifying_ms, t),
            Command::PutAccess(access) => g.put_access(access, t),
            Command::DeleteAccess { app, api } => g.delete_access(app, api, t),
            Command::Declare(declared) => g.declare(declared, t),
            Command::ReserveQuota {
                app,
                api,
                kind,
                window_start_ms,
                limit,
                want,
            } => g.reserve(
                &(app.clone(), api.clone(), *kind),
                *window_start_ms,
                *limit,
                *want,
                t,
            ),
            Command::ReportConnections { node, counts } => g.report_connections(*node, counts, t),
            Command::ReserveWebsubSubscription {
                subscription,
                app,
                api,
                max,
                now_ms,
                until_ms,
            } => g.reserve_websub(subscription, (app, api), *max, *now_ms, *until_ms, t),
            Command::ReleaseWebsubSubscription { subscription } => {
                g.release_websub(subscription, t);
                Response::Applied
            }
            Command::SetWebsubApplication {
                subscription,
                application,
            } => {
                if application.is_some() && !self.subscriptions.contains_key(subscription) {
                    return Response::NotFound;
                }
                g.set_websub_application(subscription, application.clone(), t);
                Response::Applied
            }
            _ => Response::Refused {
                reason: format!("`{}` is not a governance command", command.name()),
            },
        }
    }

    fn activate(
        &mut self,
        sub: &Subscription,
        start_offsets: &[(u32, u64)],
        touched: &mut Vec<Touched>,
    ) -> Response {
        let is_new = !self.subscriptions.contains_key(&sub.id);
        let response = self.apply(&Command::UpsertSubscription(sub.clone()), touched);
        // A verified (re)subscription: the callback answered, so a disabled one delivers again.
        if self.disabled.remove(&sub.id).is_some() {
            touched.push(Touched::Disabled(sub.id.clone()));
        }
        if is_new || !self.cursors.contains_key(&sub.id) {
            let cursor: BTreeMap<u32, u64> = start_offsets.iter().copied().collect();
            self.cursors.insert(sub.id.clone(), cursor);
            touched.push(Touched::Cursor(sub.id.clone()));
        }
        response
    }

    fn remove_subscription(&mut self, id: &str, touched: &mut Vec<Touched>) -> bool {
        let existed = self.subscriptions.remove(id).is_some();
        if existed {
            touched.push(Touched::Subscription(id.to_owned()));
        }
        if self.cursors.remove(id).is_some() {
            touched.push(Touched::Cursor(id.to_owned()));
        }
        if self.retries.remove(id).is_some() {
            touched.push(Touched::Retries(id.to_owned()));
        }
        if self.disabled.remove(id).is_some() {
            touched.push(Touched::Disabled(id.to_owned()));
        }
        let letters: Vec<_> = self
            .dead_letters
            .range((id.to_owned(), 0, 0)..=(id.to_owned(), u32::MAX, u64::MAX))
            .map(|(k, _)| k.clone())
            .collect();
        for key in letters {
            self.dead_letters.remove(&key);
            touched.push(Touched::DeadLetter(key.0, key.1, key.2));
        }
        let mut gov = Vec::new();
        self.governance.set_websub_application(id, None, &mut gov);
        self.governance.set_websub_key(id, None, &mut gov);
        self.governance.release_websub(id, &mut gov);
        touched.extend(gov.into_iter().map(Touched::Gov));
        existed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::OwnerMove;

    fn sub(id: &str, owner: Option<NodeId>, expires: u64) -> Subscription {
        Subscription {
            id: id.to_owned(),
            topic: "orders".to_owned(),
            callback: format!("http://127.0.0.1:9/{id}"),
            secret: None,
            lease_seconds: 60,
            lease_expires_at_ms: expires,
            state: SubscriptionState::Active,
            owner,
            created_at_ms: 1,
            updated_at_ms: 1,
            handover_to: None,
            topic_url: None,
            signing: Default::default(),
            previous_secret: None,
        }
    }

    #[test]
    fn cursor_commits_are_fenced_and_monotonic() {
        let mut state = ControlState::default();
        let mut touched = Vec::new();
        state.apply(
            &Command::UpsertSubscription(sub("a", Some(1), 10)),
            &mut touched,
        );
        let commit = |node, offset| Command::CommitCursors {
            node,
            commits: vec![CursorCommit {
                id: "a".to_owned(),
                partition: 0,
                offset,
            }],
        };
        assert_eq!(state.apply(&commit(1, 5), &mut touched), Response::Count(1));
        assert_eq!(state.apply(&commit(2, 9), &mut touched), Response::Count(0));
        assert_eq!(state.apply(&commit(1, 3), &mut touched), Response::Count(0));
        assert_eq!(state.cursors["a"][&0], 5);
    }

    #[test]
    fn resubscribe_keeps_owner_and_creation_time() {
        let mut state = ControlState::default();
        let mut touched = Vec::new();
        state.apply(
            &Command::UpsertSubscription(sub("a", Some(3), 10)),
            &mut touched,
        );
        let mut renewed = sub("a", None, 99);
        renewed.created_at_ms = 50;
        renewed.secret = Some("new".to_owned());
        state.apply(&Command::UpsertSubscription(renewed), &mut touched);
        let now = &state.subscriptions["a"];
        assert_eq!(now.owner, Some(3));
        assert_eq!(now.created_at_ms, 1);
        assert_eq!(now.lease_expires_at_ms, 99);
        assert_eq!(now.secret.as_deref(), Some("new"));
    }

    #[test]
    fn lease_expiry_removes_everything_of_the_subscription() {
        let mut state = ControlState::default();
        let mut touched = Vec::new();
        state.apply(
            &Command::UpsertSubscription(sub("a", Some(1), 10)),
            &mut touched,
        );
        state.apply(
            &Command::UpsertSubscription(sub("b", Some(1), 20)),
            &mut touched,
        );
        state.apply(
            &Command::RecordDeadLetter(DeadLetter {
                id: "a".to_owned(),
                topic: "orders".to_owned(),
                partition: 0,
                offset: 7,
                attempts: 5,
                last_error: "500".to_owned(),
                at_ms: 5,
            }),
            &mut touched,
        );
        let resp = state.apply(&Command::ExpireLeases { now_ms: 15 }, &mut touched);
        assert_eq!(resp, Response::Count(1));
        assert!(!state.subscriptions.contains_key("a"));
        assert!(state.subscriptions.contains_key("b"));
        assert!(state.dead_letters.is_empty());
    }

    #[test]
    fn activation_sets_the_cursor_of_a_new_subscription_only() {
        let mut state = ControlState::default();
        let mut touched = Vec::new();
        let activate = |expires| Command::ActivateSubscription {
            subscription: sub("a", Some(1), expires),
            start_offsets: vec![(0, 42)],
        };
        state.apply(&activate(10), &mut touched);
        assert_eq!(state.cursors["a"][&0], 42);
        state.apply(
            &Command::CommitCursors {
                node: 1,
                commits: vec![CursorCommit {
                    id: "a".to_owned(),
                    partition: 0,
                    offset: 50,
                }],
            },
            &mut touched,
        );
        state.apply(&activate(20), &mut touched);
        assert_eq!(state.cursors["a"][&0], 50, "a renewal keeps the cursor");
        assert_eq!(state.subscriptions["a"].lease_expires_at_ms, 20);
    }

    #[test]
    fn leaving_node_keeps_its_subscriptions_until_they_are_handed_over() {
        let mut state = ControlState::default();
        let mut touched = Vec::new();
        state.apply(
            &Command::UpsertSubscription(sub("a", Some(2), 10)),
            &mut touched,
        );
        state.apply(
            &Command::UpsertSubscription(sub("b", Some(1), 10)),
            &mut touched,
        );
        let resp = state.apply(&Command::NodeLeaving { node: 2, at_ms: 3 }, &mut touched);
        assert_eq!(
            resp,
            Response::Count(1),
            "one subscription still to hand over"
        );
        assert_eq!(state.subscriptions["a"].owner, Some(2));
        assert!(state.nodes[&2].leaving);
        let drain = |from, to| Command::MoveOwners {
            term: 0,
            moves: vec![OwnerMove {
                id: "a".to_owned(),
                from,
                to,
                drain: true,
            }],
        };
        // A move decided on an outdated owner is skipped.
        assert_eq!(
            state.apply(&drain(Some(1), 3), &mut touched),
            Response::Count(0)
        );
        assert_eq!(
            state.apply(&drain(Some(2), 3), &mut touched),
            Response::Count(1)
        );
        assert_eq!(
            state.subscriptions["a"].owner,
            Some(2),
            "still delivering until drained"
        );
        assert_eq!(state.subscriptions["a"].handover_to, Some(3));
        let complete = |from, to| Command::CompleteHandover {
            id: "a".to_owned(),
            from,
            to,
        };
        assert!(matches!(
            state.apply(&complete(2, 1), &mut touched),
            Response::Refused { .. }
        ));
        assert_eq!(
            state.apply(&complete(2, 3), &mut touched),
            Response::Applied
        );
        assert_eq!(state.subscriptions["a"].owner, Some(3));
        assert_eq!(state.subscriptions["a"].handover_to, None);
        // An owner that died is replaced at once (no drain).
        let reassign = Command::MoveOwners {
            term: 0,
            moves: vec![OwnerMove {
                id: "a".to_owned(),
                from: Some(3),
                to: 1,
                drain: false,
            }],
        };
        assert_eq!(state.apply(&reassign, &mut touched), Response::Count(1));
        assert_eq!(state.subscriptions["a"].owner, Some(1));
    }

    #[test]
    fn activation_records_the_application_in_the_same_entry() {
        let mut state = ControlState::default();
        let mut touched = Vec::new();
        let app = ("shop-app".to_owned(), "shop".to_owned());
        state.apply(
            &Command::ActivateSubscriptionFor {
                subscription: Box::new(sub("a", None, 10)),
                start_offsets: vec![(0, 7)],
                application: Some(app.clone()),
                key: Some("k1".to_owned()),
            },
            &mut touched,
        );
        assert_eq!(state.cursors["a"][&0], 7);
        assert_eq!(state.governance.websub_applications["a"], app);
        assert_eq!(state.governance.websub_keys["a"], "k1");
        // A renewal without credentials keeps the application; removal forgets it.
        state.apply(
            &Command::ActivateSubscriptionFor {
                subscription: Box::new(sub("a", None, 20)),
                start_offsets: vec![(0, 99)],
                application: None,
                key: None,
            },
            &mut touched,
        );
        assert_eq!(state.cursors["a"][&0], 7, "a renewal keeps its cursor");
        assert_eq!(state.governance.websub_applications["a"], app);
        state.apply(
            &Command::RemoveSubscription { id: "a".to_owned() },
            &mut touched,
        );
        assert!(!state.governance.websub_applications.contains_key("a"));
        assert!(!state.governance.websub_keys.contains_key("a"));
    }

    #[test]
    fn callback_origins_ignore_path_case_default_port_and_user() {
        assert_eq!(
            callback_origin("HTTPS://User:pw@Example.COM:443/a/b?x=1"),
            "https://example.com"
        );
        assert_eq!(
            callback_origin("http://127.0.0.1:8080/cb#f"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(callback_origin("http://[::1]:80"), "http://[::1]");
        assert_eq!(callback_origin("not a url"), "not a url");
    }

    #[test]
    fn breaker_opens_once_probes_compare_and_set_and_a_long_outage_disables() {
        let mut state = ControlState::default();
        let mut touched = Vec::new();
        state.apply(
            &Command::UpsertSubscription(sub("a", Some(1), 10)),
            &mut touched,
        );
        let mut other = sub("b", Some(1), 10);
        other.callback = "http://elsewhere.test/b".to_owned();
        state.apply(&Command::UpsertSubscription(other), &mut touched);
        let origin = callback_origin(&state.subscriptions["a"].callback);
        let open = Command::OpenEndpoint {
            origin: origin.clone(),
            at_ms: 100,
            error: "callback answered 500".to_owned(),
            probe_interval_ms: 50,
        };
        assert_eq!(state.apply(&open, &mut touched), Response::Count(1));
        assert_eq!(
            state.apply(&open, &mut touched),
            Response::Count(0),
            "opens once"
        );
        let failed = |expected| Command::EndpointProbeFailed {
            origin: origin.clone(),
            expected_next_probe_at_ms: expected,
            at_ms: 160,
            error: "timed out".to_owned(),
            probe_interval_ms: 100,
        };
        assert_eq!(state.apply(&failed(150), &mut touched), Response::Count(1));
        assert_eq!(
            state.apply(&failed(150), &mut touched),
            Response::Count(0),
            "a second probe of the same round moves nothing"
        );
        let e = &state.endpoints[&origin];
        assert_eq!((e.failures, e.next_probe_at_ms), (2, 260));
        let disable = Command::DisableEndpoint {
            origin: origin.clone(),
            at_ms: 999,
            reason: "failing since 100".to_owned(),
        };
        assert_eq!(state.apply(&disable, &mut touched), Response::Count(1));
        assert!(state.disabled.contains_key("a") && !state.disabled.contains_key("b"));
        assert!(state.endpoints.is_empty());
        let enable = Command::EnableSubscription { id: "a".to_owned() };
        assert_eq!(state.apply(&enable, &mut touched), Response::Count(1));
        assert_eq!(state.apply(&enable, &mut touched), Response::Count(0));
        // Disabled again, then removed: nothing of it is left.
        state.apply(&open, &mut touched);
        state.apply(&disable, &mut touched);
        state.apply(
            &Command::RemoveSubscription { id: "a".to_owned() },
            &mut touched,
        );
        assert!(state.disabled.is_empty());
    }
}
