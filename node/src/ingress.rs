//! What every entrypoint does before and while it moves a message, free of HTTP: admission
//! (credentials, rights, plans), the one publish pipeline (size, quota, topic, broker,
//! metrics), stream admission (connection slots, delivery budgets, rights watched for the life
//! of the stream) and WebSub subscription admission.
//!
//! Every operation answers a [`Refusal`]; the HTTP adapters (`http/webhook.rs`, `ws.rs`,
//! `sse.rs`, `websub.rs`) only translate requests into these calls and refusals into their own
//! terms.

use std::sync::Arc;
use std::time::Duration;

use eventgate_actors::broker::{BrokerDriver, OutgoingMessage, Position};
use eventgate_actors::stream::connection::CloseSwitch;
use eventgate_actors::stream::CloseReason;
use eventgate_actors::subscription::{Allowance, DeliveryPolicy};
use eventgate_raft_store::clock::now_ms;
use eventgate_raft_store::governance::{Entrypoint, OverLimit, QuotaKind, RateLimit};
use eventgate_raft_store::Subscription;
use futures_util::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;

use crate::limits::{ConnectionSlot, Limiter, WebsubQuota};
use crate::metrics::Metrics;
use crate::policy::{Action, Admission, Credential, Gatekeeper, Principal, Target, Via};
use crate::rate::RateStatus;
use crate::refusal::Refusal;

/// The entrypoint-neutral operations of the gateway. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Ingress {
    broker: Arc<dyn BrokerDriver>,
    gate: Gatekeeper,
    limiter: Limiter,
    metrics: Arc<Metrics>,
    topics_auto_create: bool,
    /// Channels' payload schemas, compiled.
    checker: Arc<crate::schema::MessageChecker>,
    /// `eventgate_messages_in_total` of the entrypoints that publish (webhook, WebSocket),
    /// resolved once: it is counted per message.
    published_webhook: Counter,
    published_websocket: Counter,
}

/// A client admitted to publish to one topic: what each of its messages is held to.
#[derive(Debug, Clone)]
pub struct Publisher {
    topic: String,
    admission: Admission,
    /// `eventgate_messages_in_total{entrypoint}`.
    published: Counter,
}

impl Publisher {
    /// The topic it publishes to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The application publishing, if known (not anonymous).
    pub fn application(&self) -> Option<&str> {
        self.admission.principal.as_ref().map(|p| p.app.as_str())
    }

    /// Largest message its API accepts, if the API sets one.
    pub fn max_message_bytes(&self) -> Option<u64> {
        self.admission.max_message_bytes
    }
}

/// Whom a stream's frames are published as: the principal admitted at connect (not
/// authenticated again), whose right is decided per frame.
#[derive(Debug, Clone)]
pub struct PublishRight {
    principal: Option<Principal>,
    /// Whether the client presented credentials.
    presented: bool,
    topic: String,
    api: Option<String>,
    entrypoint: Entrypoint,
}

/// A message the broker holds.
#[derive(Debug, Clone, Copy)]
pub struct Published {
    /// Where it landed, when the broker numbers messages (not MQTT).
    pub position: Option<Position>,
    /// Where the client stands against its plan's publish rate, when it has one.
    pub rate: Option<RateStatus>,
}

/// What an admitted stream holds for its life.
#[derive(Debug)]
pub struct StreamGrant {
    /// Who reads, when known.
    pub principal: Option<Principal>,
    /// Whom frames from the client are published as (WebSocket), if the stream carries
    /// publishes at all; the right is decided again for every frame.
    pub publish: Option<PublishRight>,
    /// The connection counted against the application's plan; released on drop.
    pub slot: Option<ConnectionSlot>,
    /// The application's delivery quota, when its plan has one.
    pub budget: Option<DeliveryBudget>,
}

impl Ingress {
    pub fn new(
        broker: Arc<dyn BrokerDriver>,
        gate: Gatekeeper,
        limiter: Limiter,
        metrics: Arc<Metrics>,
        topics_auto_create: bool,
    ) -> Self {
        Self {
            published_webhook: Metrics::counter(&metrics.messages_in, "webhook"),
            published_websocket: Metrics::counter(&metrics.messages_in, "websocket"),
            broker,
            gate,
            limiter,
            metrics,
            topics_auto_create,
            checker: Arc::default(),
        }
    }

    /// Admits `credential` to `action` on `target` through `entrypoint`; refusals of
    /// authentication and authorization are counted in `eventgate_auth_rejections`.
    pub async fn admit(
        &self,
        credential: Option<&Credential>,
        target: Target<'_>,
        action: Action,
        entrypoint: Entrypoint,
    ) -> Result<Admission, Refusal> {
        let admitted = self
            .gate
            .admit(credential, target, action, entrypoint)
            .await;
        if let Err(refusal) = &admitted {
            self.count_refusal(refusal, entrypoint);
        }
        admitted
    }

    fn count_refusal(&self, refusal: &Refusal, entrypoint: Entrypoint) {
        if let Some(outcome) = refusal.auth_outcome() {
            self.metrics
                .auth_rejections
                .get_or_create(&crate::metrics::AuthLabels {
                    outcome,
                    entrypoint: entrypoint.name(),
                })
                .inc();
        }
    }

    /// Makes sure `topic` exists: creates it when topics are created on first use.
    pub async fn ensure_topic(&self, topic: &str) -> Result<(), Refusal> {
        if self.broker.topic_exists(topic).await? {
            return Ok(());
        }
        if !self.topics_auto_create {
            return Err(Refusal::TopicNotFound {
                topic: topic.to_owned(),
            });
        }
        self.broker.ensure_topic(topic).await?;
        tracing::info!(%topic, "topic created on first use");
        Ok(())
    }

    fn publisher(&self, topic: &str, admission: Admission, entrypoint: Entrypoint) -> Publisher {
        Publisher {
            topic: topic.to_owned(),
            admission,
            published: match entrypoint {
                Entrypoint::Webhook => self.published_webhook.clone(),
                Entrypoint::Websocket => self.published_websocket.clone(),
                other => Metrics::counter(&self.metrics.messages_in, other.name()),
            },
        }
    }

    /// Admits a client to publish to `target` (a webhook provider, say) and makes sure the
    /// topic exists.
    pub async fn admit_publish(
        &self,
        credential: Option<&Credential>,
        target: Target<'_>,
        entrypoint: Entrypoint,
    ) -> Result<Publisher, Refusal> {
        let admission = self
            .admit(credential, target, Action::Publish, entrypoint)
            .await?;
        self.ensure_topic(target.topic).await?;
        Ok(self.publisher(target.topic, admission, entrypoint))
    }

    /// The publish right of a client already admitted to read `target` (a WebSocket's frames),
    /// decided for the same principal without authenticating it again.
    pub fn authorize_publish(
        &self,
        principal: Option<Principal>,
        presented: bool,
        target: Target<'_>,
        entrypoint: Entrypoint,
    ) -> Result<Publisher, Refusal> {
        let admission =
            self.gate
                .authorize(principal, presented, target, Action::Publish, entrypoint)?;
        Ok(self.publisher(target.topic, admission, entrypoint))
    }

    /// Publishes `message` for `publisher`: the API's size limit, the plan's publish rate
    /// (reserved cluster-wide before it is spent), then the broker, which answers once it
    /// holds the message durably.
    pub async fn publish(
        &self,
        publisher: &Publisher,
        message: OutgoingMessage,
    ) -> Result<Published, Refusal> {
        if let Some(max) = publisher.max_message_bytes() {
            if message.payload.len() as u64 > max {
                return Err(Refusal::PayloadTooLarge {
                    limit: usize::try_from(max).unwrap_or(usize::MAX),
                });
            }
        }
        // Before the quota: an invalid message is not counted against the plan.
        self.gate
            .reader()
            .read(|s| {
                self.checker
                    .check(&s.governance, &publisher.topic, &message.payload)
            })
            .map_err(Refusal::InvalidMessage)?;
        let admission = &publisher.admission;
        let rate = match (&admission.principal, &admission.grant) {
            (Some(p), Some(grant)) => match grant.plan.publish {
                Some(rate) => Some(
                    self.limiter
                        .take_one(&p.app, &grant.api, QuotaKind::Publish, rate)
                        .await?,
                ),
                None => None,
            },
            _ => None,
        };
        let position = self.broker.publish(&publisher.topic, message).await?;
        publisher.published.inc();
        Ok(Published { position, rate })
    }

    /// Publishes `message` for a stream's client: its right to publish (and its plan, and its
    /// API's size limit) decided on the state applied now, not at connect, then
    /// [`Ingress::publish`].
    pub async fn publish_as(
        &self,
        right: &PublishRight,
        message: OutgoingMessage,
    ) -> Result<Published, Refusal> {
        let publisher = self.authorize_publish(
            right.principal.clone(),
            right.presented,
            Target {
                topic: &right.topic,
                api: right.api.as_deref(),
            },
            right.entrypoint,
        )?;
        self.publish(&publisher, message).await
    }

    /// Admits a stream of `target` through `entrypoint` (WebSocket or SSE): the read right,
    /// whom its frames publish as when the stream may carry publishes, a connection slot and the
    /// delivery budget of the application's plan; makes sure the topic exists.
    pub async fn open_stream(
        &self,
        credential: Option<&Credential>,
        target: Target<'_>,
        entrypoint: Entrypoint,
        may_publish: bool,
    ) -> Result<StreamGrant, Refusal> {
        let admission = self
            .admit(credential, target, Action::Subscribe, entrypoint)
            .await?;
        let publish = may_publish.then(|| PublishRight {
            principal: admission.principal.clone(),
            presented: credential.is_some(),
            topic: target.topic.to_owned(),
            api: target.api.map(str::to_owned),
            entrypoint,
        });
        let (slot, budget) = match (&admission.principal, &admission.grant) {
            (Some(p), Some(grant)) => {
                let slot = grant
                    .plan
                    .max_connections
                    .map(|max| self.limiter.open_connection(&p.app, &grant.api, max))
                    .transpose()?;
                let budget = grant.plan.deliveries.map(|rate| DeliveryBudget {
                    limiter: self.limiter.clone(),
                    app: p.app.clone(),
                    api: grant.api.clone(),
                    rate,
                    mode: grant.plan.on_delivery_limit,
                });
                (slot, budget)
            }
            _ => (None, None),
        };
        self.ensure_topic(target.topic).await?;
        Ok(StreamGrant {
            principal: admission.principal,
            publish,
            slot,
            budget,
        })
    }

    /// Admits a WebSub request for `target`: the read right; for a new subscription also the
    /// plan's subscription limit and the topic. Answers who makes it: the application and
    /// the API it counts against, and the API key it lives by.
    pub async fn admit_subscription(
        &self,
        credential: Option<&Credential>,
        target: Target<'_>,
        subscription: &WebsubAsk<'_>,
    ) -> Result<Option<WebsubMaker>, Refusal> {
        let admission = self
            .admit(credential, target, Action::Subscribe, Entrypoint::Websub)
            .await?;
        let key_of = |via: &Via| match via {
            Via::ApiKey(id) => Some(id.clone()),
            // A token is short-lived: the subscription lives by the application's rights.
            Via::Jwt | Via::OAuth2 { .. } => None,
        };
        let (principal, grant) = match (admission.principal, admission.grant) {
            (Some(p), Some(g)) => (p, g),
            (principal, None) => {
                if subscription.subscribe {
                    self.ensure_topic(target.topic).await?;
                }
                // An application on a topic of no API (or a keyless one) is still who made
                // the subscription: recorded, so that its rights, not anonymous access, are
                // what the subscription is held to.
                return Ok(principal.map(|p| WebsubMaker {
                    key: key_of(&p.via),
                    app: p.app,
                    api: String::new(),
                }));
            }
            (None, Some(_)) => return Ok(None),
        };
        if subscription.subscribe {
            self.ensure_topic(target.topic).await?;
            if let Some(max) = grant.plan.max_subscriptions {
                // The slot is taken now, through the replicated state, and held while the
                // verification of intent runs: concurrent requests cannot pass the limit.
                self.limiter
                    .reserve_websub(
                        subscription.id,
                        &principal.app,
                        &grant.api,
                        max,
                        WEBSUB_RESERVATION_HOLD,
                    )
                    .await?;
            }
        }
        let key = key_of(&principal.via);
        Ok(Some(WebsubMaker {
            app: principal.app,
            api: grant.api,
            key,
        }))
    }

    /// Ends `closer` when its principal's credential expires or its right to read `target`
    /// is withdrawn (a key revoked, the application disabled, its subscription to the API or
    /// its permission removed): checked again on every change of who may do what.
    pub fn watch_rights(
        &self,
        principal: Option<Principal>,
        topic: String,
        api: Option<String>,
        entrypoint: Entrypoint,
        closer: CloseSwitch,
    ) {
        let gate = self.gate.clone();
        let mut changes = gate.changes();
        tokio::spawn(async move {
            loop {
                let expiry = principal
                    .as_ref()
                    .and_then(|p| p.expires_at_ms)
                    .map(|t| Duration::from_millis(t.saturating_sub(now_ms())));
                tokio::select! {
                    () = closer.closed() => return,
                    changed = changes.changed() => if changed.is_err() { return },
                    () = async {
                        match expiry {
                            Some(d) => tokio::time::sleep(d).await,
                            None => std::future::pending().await,
                        }
                    } => {}
                }
                let target = Target {
                    topic: &topic,
                    api: api.as_deref(),
                };
                if let Err(refusal) =
                    gate.recheck(principal.as_ref(), target, Action::Subscribe, entrypoint)
                {
                    let expired = principal
                        .as_ref()
                        .and_then(|p| p.expires_at_ms)
                        .is_some_and(|t| t <= now_ms());
                    let reason = match refusal {
                        Refusal::ApiRetired { .. } => CloseReason::ApiRetired,
                        _ if expired => CloseReason::CredentialExpired,
                        _ => CloseReason::CredentialRevoked,
                    };
                    let app = principal.as_ref().map_or("(anonymous)", |p| p.app.as_str());
                    tracing::info!(%app, %topic, reason = reason.name(), detail = %refusal, "ending a stream");
                    closer.close(reason);
                    return;
                }
            }
        });
    }
}

/// How long a WebSub subscribe holds a slot of its plan's `max_subscriptions` while its
/// verification of intent runs (the callback's timeouts are far shorter); given back at once
/// when the verification fails.
const WEBSUB_RESERVATION_HOLD: Duration = Duration::from_secs(60);

/// Who makes a WebSub subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebsubMaker {
    pub app: String,
    /// The API whose plan the subscription counts against; empty when it is made outside any
    /// API's plan (a topic of no API, a keyless API).
    pub api: String,
    /// The API key presented (none for a JWT).
    pub key: Option<String>,
}

/// A WebSub request as admission sees it.
#[derive(Debug, Clone, Copy)]
pub struct WebsubAsk<'a> {
    /// The subscription's id.
    pub id: &'a str,
    /// A subscribe (or renewal), not an unsubscribe.
    pub subscribe: bool,
}

/// A stream's deliveries counted against its application's plan.
#[derive(Debug)]
pub struct DeliveryBudget {
    limiter: Limiter,
    app: String,
    api: String,
    rate: RateLimit,
    mode: OverLimit,
}

impl DeliveryBudget {
    /// How many of the next `n` frames go out: all of them once the quota allows (pausing
    /// until the next window meanwhile), or, when the plan drops, those the quota allows now.
    pub async fn admit(&self, n: usize, closer: &CloseSwitch) -> Result<usize, CloseReason> {
        let mut granted = 0u64;
        let mut noted = false;
        loop {
            let want = n as u64 - granted;
            let (taken, status) = self
                .limiter
                .take_up_to(&self.app, &self.api, QuotaKind::Deliveries, self.rate, want)
                .await
                .map_err(|_| CloseReason::TryAgainLater)?;
            granted += taken;
            if granted == n as u64 {
                return Ok(n);
            }
            if !noted {
                self.limiter.note_limited("deliveries");
                noted = true;
            }
            if self.mode == OverLimit::Drop {
                return Ok(granted as usize);
            }
            let wait = Duration::from_millis(status.reset_ms.max(10));
            tokio::select! {
                () = closer.closed() => return Err(closer.reason()),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// WebSub subscriptions held to what admitted them for their whole life: before every
/// delivery attempt, and whenever the hub reconciles on a change, the subscriber's right to the
/// topic is decided again on the applied state (the key it subscribed with, its application,
/// the application's access to the API and permission, the API itself; anonymous ones: that
/// the topic is still open); first attempts spend the plan's delivery quota.
#[derive(Debug, Clone)]
pub struct WebsubPolicy {
    gate: Gatekeeper,
    quota: WebsubQuota,
}

impl WebsubPolicy {
    pub fn new(gate: Gatekeeper, quota: WebsubQuota) -> Self {
        Self { gate, quota }
    }
}

impl DeliveryPolicy for WebsubPolicy {
    fn withdrawn(&self, subscription: &Subscription) -> Option<String> {
        let (maker, key, key_expiry) = self.gate.reader().read(|s| {
            let g = &s.governance;
            let key = g.websub_keys.get(&subscription.id).cloned();
            let expiry = key
                .as_ref()
                .and_then(|k| g.keys.get(k))
                .and_then(|k| k.expires_at_ms);
            (
                g.websub_applications.get(&subscription.id).cloned(),
                key,
                expiry,
            )
        });
        let target = Target {
            topic: &subscription.topic,
            api: maker
                .as_ref()
                .map(|(_, api)| api.as_str())
                .filter(|api| !api.is_empty()),
        };
        let decided = match &maker {
            Some((app, _)) => {
                let principal = Principal {
                    app: app.clone(),
                    via: key.map_or(Via::Jwt, Via::ApiKey),
                    expires_at_ms: key_expiry,
                };
                self.gate.recheck(
                    Some(&principal),
                    target,
                    Action::Subscribe,
                    Entrypoint::Websub,
                )
            }
            None => self
                .gate
                .authorize(None, false, target, Action::Subscribe, Entrypoint::Websub)
                .map(|_| ()),
        };
        decided.err().map(|refusal| refusal.to_string())
    }

    fn allow<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Allowance> {
        Box::pin(self.quota.decide(id))
    }
}
