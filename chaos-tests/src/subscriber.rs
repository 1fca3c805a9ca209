//! A WebSub subscriber for the tests: one HTTP server on loopback that answers verification of
//! intent (echoing `hub.challenge`) on any path and records each delivery — its body read as a
//! sequence number — per callback path, with when it arrived.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, RawQuery, State};
use axum::http::Method;
use axum::routing::any;
use axum::Router;
use tokio::time::Instant;

/// Deliveries per callback path: sequence number (`u32::MAX` when the body is not one) and
/// arrival time, in arrival order.
pub type Deliveries = Arc<Mutex<BTreeMap<String, Vec<(u32, Instant)>>>>;

/// A running subscriber.
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub addr: SocketAddr,
    pub log: Deliveries,
}

async fn callback(
    State(log): State<Deliveries>,
    method: Method,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> String {
    if method == Method::GET {
        return crate::websub_challenge(query.as_deref());
    }
    let n: u32 = String::from_utf8_lossy(&body).parse().unwrap_or(u32::MAX);
    log.lock()
        .unwrap()
        .entry(path)
        .or_default()
        .push((n, Instant::now()));
    String::new()
}

impl Subscriber {
    /// Starts the server on a free port of 127.0.0.1.
    pub async fn start() -> anyhow::Result<Self> {
        let log: Deliveries = Arc::default();
        let app = Router::new()
            .route("/{*path}", any(callback))
            .with_state(log.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { addr, log })
    }

    /// The callback URL of `path` (no leading slash).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    /// For each of `nodes`, the callback URL (`s<i>`) of a subscription to `topic` that
    /// rendezvous hashing over `nodes` gives to that node.
    pub fn one_per_node(&self, topic: &str, nodes: &[u64]) -> BTreeMap<u64, String> {
        let mut chosen = BTreeMap::new();
        for i in 0..1000 {
            let url = self.url(&format!("s{i}"));
            let id = eventgate_actors::websub::subscription_id(topic, &url);
            if let Some(owner) = eventgate_actors::ownership::owner_of(&id, nodes.iter().copied()) {
                chosen.entry(owner).or_insert(url);
            }
            if chosen.len() == nodes.len() {
                break;
            }
        }
        assert_eq!(chosen.len(), nodes.len(), "a callback for every node");
        chosen
    }

    /// The sequence numbers delivered to `path`, in arrival order.
    pub fn received(&self, path: &str) -> Vec<u32> {
        self.log
            .lock()
            .unwrap()
            .get(path)
            .map(|v| v.iter().map(|(n, _)| *n).collect())
            .unwrap_or_default()
    }
}

/// Asks the hub at `base` to subscribe `callback` to `topic` (with `secret`, if any); answers
/// the hub's status.
pub async fn subscribe(
    client: &reqwest::Client,
    base: &str,
    topic: &str,
    callback: &str,
    secret: Option<&str>,
) -> anyhow::Result<reqwest::StatusCode> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("hub.mode", "subscribe")
        .append_pair("hub.topic", topic)
        .append_pair("hub.callback", callback);
    if let Some(secret) = secret {
        form.append_pair("hub.secret", secret);
    }
    let r = client
        .post(format!("{base}/hub"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.finish())
        .send()
        .await?;
    Ok(r.status())
}
