//! Cluster-wide rate limits and connection limits per application and API.
//!
//! Rates are fixed windows (`count` per `per`, aligned to the wall clock). A node spends quota
//! only after it has *reserved* it through the replicated log (`ReserveQuota`), in chunks of
//! about a tenth of the limit, so:
//! - the cluster never admits more than the limit in a window, whichever nodes clients use;
//! - a node that dies takes no quota with it: what it reserved stays consumed for the rest of
//!   the window, so a client that moves to another node is still limited;
//! - the price is that quota reserved by one node and not yet spent there is not available
//!   to another until the window ends (at most one chunk per node).
//!
//! Concurrent connections are counted per node and reported through the log when they change
//! (coalesced); a node admits a connection when its own count plus what the other live nodes
//! reported is under the plan's limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventgate_raft_store::control::ControlPlane;
use eventgate_raft_store::governance::{Plan, QuotaKind, RateLimit};
use eventgate_raft_store::{Command, Response};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use eventgate_raft_store::clock::now_ms;

use crate::rate::RateStatus;
use crate::refusal::Refusal;

#[derive(Debug, Default)]
struct Bucket {
    window_start_ms: u64,
    /// Reserved here and not yet spent.
    allowance: u64,
    /// The cluster said no more in this window.
    exhausted: bool,
}

type BucketKey = (String, String, QuotaKind);

/// One rate of a plan: how much of it the current window has used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateUsage {
    pub used: u64,
    pub limit: RateLimit,
    pub resets_in_ms: u64,
}

/// Where an application stands against its plan on one API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanUsage {
    /// None: the plan sets no such rate.
    pub publish: Option<RateUsage>,
    pub deliveries: Option<RateUsage>,
    /// Stream connections open now on the live nodes.
    pub connections: u64,
    pub websub_subscriptions: u64,
}

/// The node's rate and connection limiter. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    control: ControlPlane,
    buckets: Mutex<HashMap<BucketKey, Arc<tokio::sync::Mutex<Bucket>>>>,
    connections: Mutex<HashMap<(String, String), u32>>,
    report: Notify,
    /// Nodes not heard from for this long are not counted.
    liveness: Duration,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Limiter {
    pub fn new(
        control: ControlPlane,
        liveness: Duration,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                control,
                buckets: Mutex::new(HashMap::new()),
                connections: Mutex::new(HashMap::new()),
                report: Notify::new(),
                liveness,
                metrics,
            }),
        }
    }

    fn bucket(&self, key: &BucketKey) -> Arc<tokio::sync::Mutex<Bucket>> {
        let mut buckets = self.inner.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets.entry(key.clone()).or_default().clone()
    }

    fn status(
        &self,
        key: &BucketKey,
        limit: RateLimit,
        window_start: u64,
        allowance: u64,
    ) -> RateStatus {
        let used = self.inner.control.reader().read(|s| {
            s.governance
                .usage
                .get(key)
                .filter(|u| u.window_start_ms == window_start)
                .map_or(0, |u| u.used)
        });
        RateStatus {
            limit,
            remaining: limit.count.saturating_sub(used) + allowance,
            reset_ms: (window_start + limit.window_ms).saturating_sub(now_ms()),
        }
    }

    /// Takes up to `n` of the quota; answers how many were granted and the status after.
    pub async fn take_up_to(
        &self,
        app: &str,
        api: &str,
        kind: QuotaKind,
        limit: RateLimit,
        n: u64,
    ) -> Result<(u64, RateStatus), Refusal> {
        let key = (app.to_owned(), api.to_owned(), kind);
        let bucket = self.bucket(&key);
        // One reservation in flight per key on this node; the others wait and use it.
        let mut b = bucket.lock().await;
        let window_start = now_ms() / limit.window_ms * limit.window_ms;
        if b.window_start_ms != window_start {
            *b = Bucket {
                window_start_ms: window_start,
                allowance: 0,
                exhausted: false,
            };
        }
        if b.allowance < n && !b.exhausted {
            let chunk = limit
                .count
                .div_ceil(10)
                .max(n - b.allowance)
                .min(limit.count);
            let response = self
                .inner
                .control
                .write(Command::ReserveQuota {
                    app: app.to_owned(),
                    api: api.to_owned(),
                    kind,
                    window_start_ms: window_start,
                    limit: limit.count,
                    want: chunk,
                })
                .await?;
            let granted = match response {
                Response::Count(g) => g,
                _ => 0,
            };
            b.allowance += granted;
            if granted < chunk {
                b.exhausted = true;
            }
        }
        let taken = n.min(b.allowance);
        b.allowance -= taken;
        let status = self.status(&key, limit, window_start, b.allowance);
        Ok((taken, status))
    }

    /// Counts something held or refused by a limit in `eventgate_rate_limited{kind}`.
    pub fn note_limited(&self, kind: &'static str) {
        self.inner
            .metrics
            .rate_limited
            .get_or_create(&crate::metrics::RateLimitLabels { kind })
            .inc();
    }

    /// Takes one unit (a published message), or refuses with where the client stands (for
    /// `Retry-After` and the `RateLimit-*` headers).
    pub async fn take_one(
        &self,
        app: &str,
        api: &str,
        kind: QuotaKind,
        limit: RateLimit,
    ) -> Result<RateStatus, Refusal> {
        let (taken, status) = self.take_up_to(app, api, kind, limit, 1).await?;
        if taken == 1 {
            return Ok(status);
        }
        self.note_limited(match kind {
            QuotaKind::Publish => "publish",
            QuotaKind::Deliveries => "deliveries",
        });
        Err(Refusal::RateLimited {
            detail: format!(
                "application `{app}` has used its {} of {} per {} ms on API `{api}`",
                match kind {
                    QuotaKind::Publish => "publish quota",
                    QuotaKind::Deliveries => "delivery quota",
                },
                limit.count,
                limit.window_ms
            ),
            status,
        })
    }

    /// Takes, through the replicated state, a slot of `(app, api)`'s `max` WebSub subscriptions
    /// for subscription `id` while its verification runs (at most `hold`): concurrent requests
    /// on any nodes cannot together pass the limit. A renewal takes none.
    pub async fn reserve_websub(
        &self,
        id: &str,
        app: &str,
        api: &str,
        max: u32,
        hold: Duration,
    ) -> Result<(), Refusal> {
        let now = now_ms();
        let response = self
            .inner
            .control
            .write(Command::ReserveWebsubSubscription {
                subscription: id.to_owned(),
                app: app.to_owned(),
                api: api.to_owned(),
                max,
                now_ms: now,
                until_ms: now + hold.as_millis() as u64,
            })
            .await?;
        match response {
            Response::Refused { reason } => {
                self.note_limited("subscriptions");
                Err(Refusal::QuotaExceeded { detail: reason })
            }
            _ => Ok(()),
        }
    }

    /// Where `(app, api)` stands against `plan` now, cluster-wide (the portal's usage view).
    /// A rate's `used` is what the nodes reserved in the current window less what this node
    /// holds unspent: exact for a client of one node, otherwise at most one unspent chunk (a
    /// tenth of the limit) per other node above what was spent.
    pub fn usage(&self, app: &str, api: &str, plan: &Plan) -> PlanUsage {
        let now = now_ms();
        let control = &self.inner.control;
        let rate = |kind: QuotaKind, limit: Option<RateLimit>| {
            let limit = limit?;
            let window_start = now / limit.window_ms * limit.window_ms;
            let key = (app.to_owned(), api.to_owned(), kind);
            let reserved = control.reader().read(|s| {
                s.governance
                    .usage
                    .get(&key)
                    .filter(|u| u.window_start_ms == window_start)
                    .map_or(0, |u| u.used)
            });
            let unspent_here = {
                let buckets = self.inner.buckets.lock().unwrap_or_else(|p| p.into_inner());
                buckets.get(&key).map_or(0, |b| {
                    b.try_lock()
                        .ok()
                        .filter(|b| b.window_start_ms == window_start)
                        .map_or(0, |b| b.allowance)
                })
            };
            Some(RateUsage {
                used: reserved.saturating_sub(unspent_here).min(limit.count),
                limit,
                resets_in_ms: (window_start + limit.window_ms).saturating_sub(now),
            })
        };
        let me = control.node_id();
        let horizon = now.saturating_sub(self.inner.liveness.as_millis() as u64);
        let (elsewhere, websub) = control.reader().read(|s| {
            let elsewhere = s.governance.connections_elsewhere(app, api, me, |n| {
                s.nodes
                    .get(&n)
                    .is_some_and(|l| !l.leaving && l.last_seen_ms >= horizon)
            });
            (elsewhere, s.governance.websub_count(app, api) as u64)
        });
        let here = self
            .inner
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(app.to_owned(), api.to_owned()))
            .copied()
            .unwrap_or(0);
        PlanUsage {
            publish: rate(QuotaKind::Publish, plan.publish),
            deliveries: rate(QuotaKind::Deliveries, plan.deliveries),
            connections: u64::from(here) + elsewhere,
            websub_subscriptions: websub,
        }
    }

    /// Admits one more stream connection of `(app, api)` under `max`, cluster-wide. The slot
    /// is held until the returned guard is dropped.
    pub fn open_connection(
        &self,
        app: &str,
        api: &str,
        max: u32,
    ) -> Result<ConnectionSlot, Refusal> {
        let key = (app.to_owned(), api.to_owned());
        let control = &self.inner.control;
        let me = control.node_id();
        let horizon = now_ms().saturating_sub(self.inner.liveness.as_millis() as u64);
        let elsewhere = control.reader().read(|s| {
            s.governance.connections_elsewhere(app, api, me, |n| {
                s.nodes
                    .get(&n)
                    .is_some_and(|l| !l.leaving && l.last_seen_ms >= horizon)
            })
        });
        {
            let mut conns = self
                .inner
                .connections
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let mine = conns.entry(key.clone()).or_insert(0);
            if u64::from(*mine) + elsewhere >= u64::from(max) {
                drop(conns);
                self.note_limited("connections");
                return Err(Refusal::QuotaExceeded {
                    detail: format!(
                        "application `{app}` holds its plan's {max} stream connections on API `{api}` across the cluster"
                    ),
                });
            }
            *mine += 1;
        }
        self.inner.report.notify_one();
        Ok(ConnectionSlot {
            limiter: self.clone(),
            key,
        })
    }

    fn close_connection(&self, key: &(String, String)) {
        let mut conns = self
            .inner
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = conns.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                conns.remove(key);
            }
        }
        drop(conns);
        self.inner.report.notify_one();
    }

    /// Reports this node's connection counts when they change (at most every 100 ms), and
    /// every `refresh` so that a report lost to a failed write is made good.
    pub fn spawn_reporter(&self, shutdown: CancellationToken, refresh: Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut last: Option<Vec<((String, String), u32)>> = None;
            // What an earlier run of this node reported is stale: replace it at once.
            this.inner.report.notify_one();
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = this.inner.report.notified() => {}
                    () = tokio::time::sleep(refresh) => { last = None; }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut counts: Vec<_> = this
                    .inner
                    .connections
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect();
                counts.sort();
                if last.as_ref() == Some(&counts) {
                    continue;
                }
                let node = this.inner.control.node_id();
                match this
                    .inner
                    .control
                    .write(Command::ReportConnections {
                        node,
                        counts: counts.clone(),
                    })
                    .await
                {
                    Ok(_) => last = Some(counts),
                    Err(e) => {
                        tracing::debug!(error = %e, "connection report not written; retrying");
                        this.inner.report.notify_one();
                    }
                }
            }
        });
    }
}

/// A stream connection counted against its application's plan; released on drop.
#[derive(Debug)]
pub struct ConnectionSlot {
    limiter: Limiter,
    key: (String, String),
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limiter.close_connection(&self.key);
    }
}

/// Plans' delivery limits for WebSub subscriptions: a subscription made by an application
/// under an API spends the application's `deliveries` quota on that API, as its streams do.
#[derive(Debug, Clone)]
pub struct WebsubQuota {
    limiter: Limiter,
}

impl WebsubQuota {
    pub fn new(limiter: Limiter) -> Self {
        Self { limiter }
    }

    /// Whether subscription `id` may deliver one more message now, under the plan of the
    /// (application, API) that made it.
    pub async fn decide(&self, id: &str) -> eventgate_actors::subscription::Allowance {
        use eventgate_actors::subscription::Allowance;
        use eventgate_raft_store::governance::{AccessState, OverLimit};
        let plan = self.limiter.inner.control.reader().read(|s| {
            let g = &s.governance;
            let (app, api) = g.websub_applications.get(id)?;
            let access = g.access.get(&(app.clone(), api.clone()))?;
            if access.state != AccessState::Approved {
                return None;
            }
            let plan = g.plans.get(&access.plan)?;
            Some((
                app.clone(),
                api.clone(),
                plan.deliveries?,
                plan.on_delivery_limit,
            ))
        });
        let Some((app, api, rate, mode)) = plan else {
            return Allowance::Deliver;
        };
        match self
            .limiter
            .take_up_to(&app, &api, QuotaKind::Deliveries, rate, 1)
            .await
        {
            Ok((1, _)) => Allowance::Deliver,
            Ok((_, status)) => {
                self.limiter.note_limited("deliveries");
                match mode {
                    OverLimit::Drop => Allowance::Drop,
                    OverLimit::Pause => {
                        Allowance::Wait(Duration::from_millis(status.reset_ms.max(10)))
                    }
                }
            }
            // No quorum to reserve quota: hold deliveries rather than exceed the plan.
            Err(_) => Allowance::Wait(Duration::from_secs(1)),
        }
    }
}
