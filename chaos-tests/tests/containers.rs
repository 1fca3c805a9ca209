//! The docker-compose cluster (`docker/`: three nodes, HAProxy, a Kafka-protocol broker)
//! under container faults, with real clients through the load balancer: a webhook provider
//! publishing steadily, a WebSub subscriber on the host, an SSE and a WebSocket client that
//! reconnect and resume. First SSE latency through the load balancer and directly; then
//! scenarios, one after the other under load: `docker kill` of the leader, `docker kill` of
//! the subscription's owner, `docker stop` (SIGTERM) of the owner and its return,
//! `docker network disconnect` of a node (and reconnect), two nodes killed at once (quorum
//! lost: publishing must go on through the survivor), a rolling restart of every node, a full
//! stop and start.
//!
//! Then: no accepted message is missing at the WebSub callback, the SSE client or the
//! WebSocket client, the subscription is still there, and the figures (time to recover,
//! election, handover pauses, publish availability without quorum, duplicates per scenario)
//! are printed.
//!
//! Needs Docker; builds the images on first use (docker/local.sh). Ignored by a plain `cargo
//! test`; `.ci/run` runs it when `docker info` answers:
//! `cargo test -p eventgate-chaos-tests --test containers -- --ignored --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::Method;
use axum::routing::any;
use axum::Router;
use eventgate_chaos_tests::compose::{docker_available, Compose};
use eventgate_chaos_tests::sse::Sse;
use eventgate_chaos_tests::{init_logging, wait};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::time::Instant;
use tracing::info;

const NODES: [&str; 3] = ["node1", "node2", "node3"];

/// Messages received by one client: sequence number and when.
type Received = Arc<Mutex<Vec<(u32, Instant)>>>;

#[derive(Default)]
struct Published {
    /// Accepted (202) sequence numbers and when.
    accepted: BTreeMap<u32, Instant>,
    /// When a publish failed (refused or no answer).
    failures: Vec<Instant>,
}

async fn callback(
    State(log): State<Received>,
    method: Method,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> String {
    if method == Method::GET {
        return eventgate_chaos_tests::websub_challenge(query.as_deref());
    }
    if let Ok(n) = String::from_utf8_lossy(&body).parse() {
        log.lock().unwrap().push((n, Instant::now()));
    }
    String::new()
}

/// Publishes `seq` numbers to the load balancer every 20 ms until `stop`.
fn publisher(
    lb: String,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Published>>, tokio::task::JoinHandle<()>) {
    let published: Arc<Mutex<Published>> = Arc::default();
    let log = published.clone();
    let task = tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .expect("client");
        let mut seq = 0u32;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let r = client
                .post(format!("{lb}/webhook-receiver?topic=orders"))
                .header("content-type", "text/plain")
                .body(seq.to_string())
                .send()
                .await;
            let mut log = log.lock().unwrap();
            match r {
                Ok(r) if r.status() == 202 => {
                    log.accepted.insert(seq, Instant::now());
                }
                _ => log.failures.push(Instant::now()),
            }
            seq += 1;
        }
    });
    (published, task)
}

/// An SSE client of the load balancer that reconnects with its last event id until `stop`.
fn sse_client(
    lb: String,
    stop: Arc<AtomicBool>,
) -> (Received, Arc<Mutex<u32>>, tokio::task::JoinHandle<()>) {
    let got: Received = Arc::default();
    let reconnects = Arc::new(Mutex::new(0u32));
    let (log, count) = (got.clone(), reconnects.clone());
    let task = tokio::spawn(async move {
        let mut last: Option<String> = None;
        while !stop.load(Ordering::Relaxed) {
            let url = match &last {
                Some(_) => format!("{lb}/sse/orders"),
                None => format!("{lb}/sse/orders?from=earliest"),
            };
            if let Ok(mut sse) = Sse::try_open(&url, last.as_deref()).await {
                loop {
                    let next = tokio::time::timeout(Duration::from_millis(500), sse.next()).await;
                    match next {
                        Ok(Some(event)) => {
                            if event.event.is_none() {
                                if let Ok(n) = event.data.parse() {
                                    log.lock().unwrap().push((n, Instant::now()));
                                }
                            }
                            last = sse.last_id.clone().or(last);
                        }
                        Ok(None) => break,
                        Err(_) if stop.load(Ordering::Relaxed) => return,
                        Err(_) => {}
                    }
                }
            }
            *count.lock().unwrap() += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    (got, reconnects, task)
}

/// A WebSocket client of the load balancer (JSON envelopes) that reconnects with its last
/// message id until `stop`.
fn ws_client(
    lb: String,
    stop: Arc<AtomicBool>,
) -> (Received, Arc<Mutex<u32>>, tokio::task::JoinHandle<()>) {
    use tokio_tungstenite::tungstenite::Message;
    let got: Received = Arc::default();
    let reconnects = Arc::new(Mutex::new(0u32));
    let (log, count) = (got.clone(), reconnects.clone());
    let base = lb.replacen("http://", "ws://", 1);
    let task = tokio::spawn(async move {
        let mut last: Option<String> = None;
        while !stop.load(Ordering::Relaxed) {
            let url = match &last {
                Some(id) => format!("{base}/ws/orders?envelope=json&lastEventId={id}"),
                None => format!("{base}/ws/orders?envelope=json&from=earliest"),
            };
            if let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&url).await {
                loop {
                    match tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
                        Ok(Some(Ok(Message::Text(text)))) => {
                            let doc: Value = serde_json::from_str(&text).unwrap_or_default();
                            if doc["type"] == "message" {
                                if let Some(n) =
                                    doc["payload"].as_str().and_then(|p| p.parse().ok())
                                {
                                    log.lock().unwrap().push((n, Instant::now()));
                                }
                                last = doc["id"].as_str().map(str::to_owned).or(last);
                            }
                        }
                        Ok(Some(Ok(_))) => {}
                        Ok(Some(Err(_)) | None) => break,
                        Err(_) if stop.load(Ordering::Relaxed) => return,
                        Err(_) => {}
                    }
                }
            }
            *count.lock().unwrap() += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    (got, reconnects, task)
}

/// The leader's service name and the term, as a node that answers sees it (its own view: no
/// fan-out to members that may be down, so it answers at once).
/// All nodes are asked at once, and the newest term wins: a dead node's silence costs nothing.
async fn leader(compose: &Compose) -> Option<(String, u64)> {
    let views = futures_util::future::join_all(NODES.iter().map(|n| compose.node_view(n))).await;
    views
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s["leader"].as_u64()?, s["term"].as_u64().unwrap_or(0))))
        .max_by_key(|(_, term)| *term)
        .map(|(id, term)| (format!("node{id}"), term))
}

/// Waits until a node other than `victim` reports a leader other than `victim` in a term after
/// `term`; answers how long after `since`. Only the others are asked (all at once, each
/// every 20 ms with a short timeout), so neither the dead node's silence nor a slow answer
/// inflates the figure.
async fn new_leader(
    compose: &Compose,
    victim: &str,
    term: u64,
    since: Instant,
) -> anyhow::Result<Duration> {
    let others: Vec<&str> = NODES.iter().copied().filter(|n| *n != victim).collect();
    wait::until(
        "a new leader",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            let views =
                futures_util::future::join_all(others.iter().map(|n| compose.node_view(n))).await;
            views.into_iter().flatten().find_map(|s| {
                let leader = s["leader"].as_u64()?;
                let newer = s["term"].as_u64().unwrap_or(0) > term;
                (newer && format!("node{leader}") != victim).then(|| since.elapsed())
            })
        },
    )
    .await
}

/// The longest silence of `got` between `from` and `to` (counting from `from`).
fn longest_silence(got: &Received, from: Instant, to: Instant) -> Option<Duration> {
    let mut times: Vec<Instant> = got
        .lock()
        .unwrap()
        .iter()
        .map(|(_, at)| *at)
        .filter(|at| *at >= from && *at <= to)
        .collect();
    times.sort();
    std::iter::once(from)
        .chain(times)
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .max()
}

/// Publishes 100 messages (`lat-<i>`, 20 ms apart) through the load balancer while one SSE
/// client reads through the load balancer and one reads a node directly; answers the median
/// time from a publish's 202 to the event, for each.
async fn sse_latency(lb: &str, direct: &str) -> anyhow::Result<(Duration, Duration)> {
    async fn reader(url: String, n: usize) -> anyhow::Result<Vec<(usize, Instant)>> {
        let mut sse = Sse::try_open(&url, None).await?;
        let mut got = Vec::new();
        while got.len() < n {
            let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(10), sse.next()).await
            else {
                anyhow::bail!("{url}: only {} of {n} latency probes", got.len());
            };
            if let Some(i) = event.data.strip_prefix("lat-").and_then(|i| i.parse().ok()) {
                got.push((i, Instant::now()));
            }
        }
        Ok(got)
    }
    let n = 100;
    let via_lb = tokio::spawn(reader(format!("{lb}/sse/orders"), n));
    let via_node = tokio::spawn(reader(format!("{direct}/sse/orders"), n));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = reqwest::Client::new();
    let mut sent = Vec::new();
    for i in 0..n {
        let r = client
            .post(format!("{lb}/webhook-receiver?topic=orders"))
            .header("content-type", "text/plain")
            .body(format!("lat-{i}"))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 202, "latency probe {i}: {}", r.status());
        sent.push(Instant::now());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let median = |got: Vec<(usize, Instant)>| {
        let mut lat: Vec<Duration> = got
            .into_iter()
            .map(|(i, at)| at.saturating_duration_since(sent[i]))
            .collect();
        lat.sort();
        lat[lat.len() / 2]
    };
    Ok((median(via_lb.await??), median(via_node.await??)))
}

/// Waits until every node is a reachable voter with no lag, as `via` sees it.
async fn healthy(compose: &Compose, within: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    wait::until(
        "three healthy voters",
        within,
        Duration::from_millis(250),
        || async {
            for via in NODES {
                let Some(s) = compose.status(via).await else {
                    continue;
                };
                let members = s["members"].as_array()?;
                let ok = members.len() == 3
                    && s["leader"].as_u64().is_some()
                    && members.iter().all(|m| {
                        m["role"] == "voter"
                            && m["reachable"] == true
                            && m["lag"].as_u64().is_some_and(|l| l < 50)
                    });
                if ok {
                    return Some(());
                }
            }
            None
        },
    )
    .await?;
    Ok(started.elapsed())
}

/// Waits (bounded) until publishing through the load balancer has worked steadily since the
/// fault at `since` (25 publishes in a row accepted, half a second), and answers how long after
/// `since` it worked again (zero when nothing was refused).
async fn publishing_recovered(
    published: &Mutex<Published>,
    since: Instant,
) -> anyhow::Result<Duration> {
    wait::until(
        "publishing to work again",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            let p = published.lock().unwrap();
            let last_failure = p.failures.iter().filter(|t| **t >= since).max().copied();
            let after: Vec<Instant> = p
                .accepted
                .values()
                .copied()
                .filter(|t| *t > last_failure.unwrap_or(since))
                .collect();
            if after.len() < 25 {
                return None;
            }
            Some(match last_failure {
                None => Duration::ZERO,
                Some(_) => after.iter().min()?.duration_since(since),
            })
        },
    )
    .await
}

/// Starts `container` again and answers how long until the cluster was healthy.
async fn bring_back(compose: &Compose, container: &str) -> anyhow::Result<Duration> {
    compose.docker(&["start", container]).await?;
    healthy(compose, Duration::from_secs(90)).await
}

/// How long after `since` the client received a message published after `since`.
fn delivery_resumed(
    published: &Mutex<Published>,
    got: &Received,
    since: Instant,
) -> Option<Duration> {
    let after: BTreeSet<u32> = published
        .lock()
        .unwrap()
        .accepted
        .iter()
        .filter(|(_, t)| **t > since)
        .map(|(n, _)| *n)
        .collect();
    got.lock()
        .unwrap()
        .iter()
        .filter(|(n, t)| *t > since && after.contains(n))
        .map(|(_, t)| t.duration_since(since))
        .min()
}

/// Waits (bounded) until `got` holds a message published after `since`.
async fn wait_resumed(
    published: &Mutex<Published>,
    got: &Received,
    since: Instant,
    what: &str,
) -> anyhow::Result<Duration> {
    wait::until(
        what,
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async { delivery_resumed(published, got, since) },
    )
    .await
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".to_owned(), |d| format!("{} ms", d.as_millis()))
}

struct Purge<'a>(&'a Compose);

impl Drop for Purge<'_> {
    fn drop(&mut self) {
        if std::env::var_os("EVENTGATE_KEEP_CONTAINERS").is_some() {
            return;
        }
        let _ =
            std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../docker/local.sh"))
                .arg("purge")
                .env("COMPOSE_PROJECT_NAME", &self.0.project)
                .env("EVENTGATE_PORT", self.0.port.to_string())
                .env("EVENTGATE_ADMIN_TOKEN", &self.0.token)
                .status();
    }
}

/// Scenario 0c; answers the figures.
async fn portal_through_lb(compose: &Compose) -> anyhow::Result<String> {
    let lb = compose.lb();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let form = client.get(format!("{lb}/portal/signup")).send().await?;
    anyhow::ensure!(form.status() == 200, "sign-up form: {}", form.status());
    let cookie = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .and_then(|v| v.split(';').next())
            .map(str::to_owned)
    };
    let csrf_cookie = cookie(&form, "egw_csrf").ok_or_else(|| anyhow::anyhow!("no CSRF cookie"))?;
    let csrf = csrf_cookie.trim_start_matches("egw_csrf=").to_owned();
    let t = Instant::now();
    let r = client
        .post(format!("{lb}/portal/signup"))
        .header("cookie", &csrf_cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "Container"),
            ("email", "container@example.com"),
            ("password", "a long enough password"),
        ])
        .send()
        .await?;
    anyhow::ensure!(r.status() == 303, "sign-up: {}", r.status());
    let session = cookie(&r, "egw_session").ok_or_else(|| anyhow::anyhow!("no session cookie"))?;
    // Six requests: every node twice under round robin.
    let mut served = 0;
    for _ in 0..6 {
        let r = client
            .get(format!("{lb}/portal/account"))
            .header("cookie", &session)
            .send()
            .await?;
        let status = r.status();
        let page = r.text().await?;
        anyhow::ensure!(
            status == 200 && page.contains("container@example.com"),
            "the session on a node behind the load balancer: {status}"
        );
        served += 1;
    }
    Ok(format!(
        "signed up and {served} account pages through HAProxy (round robin over three nodes) in {}",
        ms(Some(t.elapsed()))
    ))
}

/// An admin request of a scenario: node, method, path, body, the statuses that are success.
type AdminStep<'a> = (&'a str, reqwest::Method, &'a str, Option<Value>, &'a [u16]);

/// The publisher's flow against the compose cluster (see scenario 0b); answers the figures.
async fn publisher_flow(compose: &Compose) -> anyhow::Result<String> {
    use reqwest::Method;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let lb = compose.lb();
    let document = include_str!("../../node/tests/fixtures/import/sweet-prod-ws-3.0.yaml");
    let steps: [AdminStep<'_>; 5] = [
        (
            "node1",
            Method::POST,
            "/apis/import",
            Some(Value::String(document.to_owned())),
            &[200, 201],
        ),
        (
            "node1",
            Method::PUT,
            "/apis/sweet-prod-app/lifecycle",
            Some(serde_json::json!({ "state": "published" })),
            &[200],
        ),
        (
            "node2",
            Method::PUT,
            "/plans/gold",
            Some(serde_json::json!({})),
            &[200, 201],
        ),
        (
            "node2",
            Method::PUT,
            "/applications/sweet",
            Some(
                serde_json::json!({ "permissions": [{ "topics": "sweet.*", "publish": true, "subscribe": true }] }),
            ),
            &[200, 201],
        ),
        (
            "node2",
            Method::PUT,
            "/applications/sweet/access/sweet-prod-app",
            Some(serde_json::json!({ "plan": "gold" })),
            &[200, 201],
        ),
    ];
    for (node, method, path, body, ok) in steps {
        let (status, answer) = compose.admin_call(node, method, path, body).await?;
        anyhow::ensure!(ok.contains(&status), "{path} on {node}: {status} {answer}");
    }
    let (status, created) = compose
        .admin_call(
            "node3",
            Method::POST,
            "/applications/sweet/client-secrets",
            None,
        )
        .await?;
    anyhow::ensure!(status == 201, "client secret: {status} {created}");
    let secret = created["client_secret"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let client = reqwest::Client::new();
    let token = || {
        let (client, lb, secret) = (client.clone(), lb.clone(), secret.clone());
        async move {
            let r = client
                .post(format!("{lb}/oauth2/token"))
                .basic_auth("sweet", Some(&secret))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .ok()?;
            let body: Value = r.json().await.ok()?;
            body["access_token"].as_str().map(str::to_owned)
        }
    };
    let t = Instant::now();
    let first = wait::until(
        "an access token through the load balancer",
        Duration::from_secs(20),
        Duration::from_millis(100),
        token,
    )
    .await?;
    let token_in = t.elapsed();
    let ws_url = format!(
        "{}/sweet-prod-app/1.0.0",
        lb.replacen("http://", "ws://", 1)
    );
    let mut request = ws_url.as_str().into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {first}").parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    let publish = |token: String, body: &'static str| {
        let (client, lb) = (client.clone(), lb.clone());
        async move {
            client
                .post(format!(
                    "{lb}/sweet-prod-app/1.0.0/webhook-receiver?topic=production"
                ))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    let t = Instant::now();
    let status = publish(first.clone(), r#"{"sweet":"toffee","count":12}"#).await;
    anyhow::ensure!(status == 202, "publish through the load balancer: {status}");
    let message = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
                Some(Ok(_)) => {}
                other => return Err(anyhow::anyhow!("the WebSocket ended: {other:?}")),
            }
        }
    })
    .await??;
    let delivered_in = t.elapsed();
    anyhow::ensure!(message.contains("toffee"), "{message}");
    let (status, rotated) = compose
        .admin_call("node3", Method::POST, "/oauth2/keys/rotate", None)
        .await?;
    anyhow::ensure!(status == 200, "rotate: {status} {rotated}");
    let second = wait::until(
        "a token of the new key",
        Duration::from_secs(20),
        Duration::from_millis(100),
        token,
    )
    .await?;
    for (which, t) in [("old", first), ("new", second)] {
        let status = publish(t, r#"{"sweet":"fudge","count":1}"#).await;
        anyhow::ensure!(
            status == 202,
            "the {which} key's token after the rotation: {status}"
        );
    }
    Ok(format!(
        "token {} · publish → WebSocket at the base path {} · both keys' tokens accepted after a rotation",
        ms(Some(token_in)),
        ms(Some(delivered_in))
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Docker and builds images; .ci/run runs it when Docker is available"]
async fn compose_cluster_survives_container_faults() -> anyhow::Result<()> {
    init_logging();
    anyhow::ensure!(docker_available(), "docker is not available");
    let compose = Compose::new("egchaos")?;
    // A previous run's leftovers, then a fresh cluster.
    compose.purge().await?;
    let _purge = Purge(&compose);
    let started = Instant::now();
    compose.up().await?;
    info!(elapsed = ?started.elapsed(), "--- cluster up (images built when missing)");
    let status = compose
        .compose(&["exec", "-T", "node1", "eventgate", "cluster", "status"])
        .await?;
    println!("{status}");
    assert!(status.contains("voters: 3"), "{status}");
    healthy(&compose, Duration::from_secs(60)).await?;
    // The image's own health check (`eventgate probe` on /readyz) agrees.
    for node in NODES {
        wait::until(
            &format!("{node}'s container to be healthy"),
            Duration::from_secs(60),
            Duration::from_millis(500),
            || async { (compose.health(node).await.ok()? == "healthy").then_some(()) },
        )
        .await?;
    }
    let lb = compose.lb();
    wait::until(
        "the load balancer to answer",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            reqwest::get(format!("{lb}/readyz"))
                .await
                .ok()
                .filter(|r| r.status() == 200)
        },
    )
    .await?;

    // The WebSub subscriber on the host, at its address on the project's network.
    let websub: Received = Arc::default();
    let gateway = compose.gateway().await?;
    let listener = tokio::net::TcpListener::bind((gateway.as_str(), 0)).await?;
    let callback_url = format!("http://{}/websub", listener.local_addr()?);
    let app = Router::new()
        .route("/websub", any(callback))
        .with_state(websub.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("hub.mode", "subscribe")
        .append_pair("hub.topic", "orders")
        .append_pair("hub.callback", &callback_url)
        .append_pair("hub.secret", "container-chaos")
        .finish();
    let r = reqwest::Client::new()
        .post(format!("{lb}/hub"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await?;
    assert_eq!(r.status(), 202, "{}", r.text().await?);
    // Asked of the leader (any node that answers, if none is known): a follower that just
    // restarted, or the node just killed, would not say.
    let owner_of = || async {
        let mut ask: Vec<String> = leader(&compose).await.map(|(l, _)| l).into_iter().collect();
        ask.extend(NODES.iter().map(|n| (*n).to_owned()));
        for node in ask {
            let Ok(list) = compose.admin(&node, "/subscriptions").await else {
                continue;
            };
            return list
                .as_array()?
                .iter()
                .find(|s| s["callback"] == callback_url.as_str() && s["state"] == "active")
                .and_then(|s| s["owner"].as_u64())
                .map(|id| format!("node{id}"));
        }
        None
    };
    let owner = wait::until(
        "the subscription to be active",
        Duration::from_secs(30),
        Duration::from_millis(100),
        owner_of,
    )
    .await?;
    info!(%owner, "--- subscribed");

    let stop = Arc::new(AtomicBool::new(false));
    let (sse, sse_reconnects, sse_task) = sse_client(lb.clone(), stop.clone());
    let (ws, ws_reconnects, ws_task) = ws_client(lb.clone(), stop.clone());
    // They read from the earliest message: none is missed however long they take to open.
    // The clients read until the end of the checks; the publisher stops before them.
    let stop_publishing = Arc::new(AtomicBool::new(false));
    let (published, publishing) = publisher(lb.clone(), stop_publishing.clone());
    wait_resumed(&published, &websub, Instant::now(), "first deliveries").await?;

    let mut report: Vec<(String, String)> = Vec::new();
    // Each scenario's time span, to attribute duplicates.
    let mut windows: Vec<(&str, Instant, Instant)> = Vec::new();

    // 0. SSE latency through HAProxy and directly (same node kind, same run).
    let direct = format!("http://{}:8080", compose.ip("node1").await?);
    let (via_lb, via_node) = sse_latency(&lb, &direct).await?;
    report.push((
        "SSE latency (p50, publish 202 → event)".to_owned(),
        format!(
            "through the load balancer {:.1} ms · directly {:.1} ms",
            via_lb.as_secs_f64() * 1000.0,
            via_node.as_secs_f64() * 1000.0
        ),
    ));

    // 0b. The publisher's flow through the load balancer: an API imported from an AsyncAPI
    // document and published through one node's admin API, an application's client secret
    // through another's; a token, a WebSocket at the API's base path and a publish through
    // HAProxy (each may land on any node); the signing key rotated through a third node, the
    // token signed before it still good.
    report.push((
        "publisher's flow through the load balancer".to_owned(),
        publisher_flow(&compose).await?,
    ));

    // 0c. The developer portal through the load balancer: a sign-up lands on one node, and
    // the session holds on whichever node HAProxy picks next (round robin over three).
    report.push((
        "portal through the load balancer".to_owned(),
        portal_through_lb(&compose).await?,
    ));

    // 1. docker kill of the leader.
    let (victim, term) = leader(&compose).await.expect("a leader");
    let container = compose.container(&victim).await?;
    let t = Instant::now();
    compose.docker(&["kill", &container]).await?;
    let elected = new_leader(&compose, &victim, term, t).await?;
    let resumed =
        wait_resumed(&published, &websub, t, "deliveries after the leader's loss").await?;
    let publish = Some(publishing_recovered(&published, t).await?);
    let rejoined = bring_back(&compose, &container).await?;
    windows.push(("kill leader", t, Instant::now()));
    report.push((
        format!("kill leader ({victim})"),
        format!(
            "new leader {} · publishing back {} · WebSub resumed {} · restarted node healthy {}",
            ms(Some(elected)),
            ms(publish),
            ms(Some(resumed)),
            ms(Some(rejoined))
        ),
    ));

    // 2. docker kill of the subscription's owner.
    let owner = wait::until(
        "an owner",
        Duration::from_secs(30),
        Duration::from_millis(100),
        owner_of,
    )
    .await?;
    let container = compose.container(&owner).await?;
    let t = Instant::now();
    compose.docker(&["kill", &container]).await?;
    let resumed = wait_resumed(&published, &websub, t, "deliveries after the owner's loss").await?;
    let moved = wait::until(
        "a new owner",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async { owner_of().await.filter(|o| *o != owner) },
    )
    .await
    .ok();
    let publish = Some(publishing_recovered(&published, t).await?);
    let rejoined = bring_back(&compose, &container).await?;
    windows.push(("kill owner", t, Instant::now()));
    report.push((
        format!("kill owner ({owner})"),
        format!(
            "WebSub resumed {} (new owner {}) · publishing back {} · restarted node healthy {}",
            ms(Some(resumed)),
            moved.unwrap_or_default(),
            ms(publish),
            ms(Some(rejoined))
        ),
    ));

    // 2b. docker stop (SIGTERM) of the subscription's owner: its subscription is handed over
    // before it exits; started again, the node gets it back once settled.
    let owner = wait::until(
        "an owner",
        Duration::from_secs(30),
        Duration::from_millis(100),
        owner_of,
    )
    .await?;
    let container = compose.container(&owner).await?;
    let t = Instant::now();
    compose.docker(&["stop", "-t", "20", &container]).await?;
    let stopped_in = t.elapsed();
    let moved = owner_of().await;
    wait_resumed(
        &published,
        &websub,
        Instant::now(),
        "deliveries after SIGTERM",
    )
    .await?;
    let pause = longest_silence(&websub, t, Instant::now());
    compose.docker(&["start", &container]).await?;
    let started = Instant::now();
    // Once the restarted node has settled, every subscription is where rendezvous hashing
    // over the three puts it.
    let home = format!(
        "node{}",
        eventgate_actors::ownership::owner_of(
            &eventgate_actors::websub::subscription_id("orders", &callback_url),
            [1, 2, 3]
        )
        .expect("an owner")
    );
    let back = wait::until(
        "the subscription on its rendezvous owner",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async { (owner_of().await.as_deref() == Some(home.as_str())).then(Instant::now) },
    )
    .await
    .ok();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let back_pause =
        back.and_then(|b| longest_silence(&websub, b - Duration::from_secs(1), Instant::now()));
    healthy(&compose, Duration::from_secs(90)).await?;
    windows.push(("SIGTERM owner", t, Instant::now()));
    report.push((
        format!("SIGTERM owner ({owner})"),
        format!(
            "exited after {} (handed over to {}) · WebSub longest silence {} · on its rendezvous owner {home} {} after the restart, silence then {}",
            ms(Some(stopped_in)),
            moved.unwrap_or_default(),
            ms(pause),
            ms(back.map(|b| b.duration_since(started))),
            ms(back_pause)
        ),
    ));

    // 3. Partition: the leader's container off the network, then back.
    let (victim, term) = leader(&compose).await.expect("a leader");
    let container = compose.container(&victim).await?;
    let network = compose.network();
    let t = Instant::now();
    compose
        .docker(&["network", "disconnect", &network, &container])
        .await?;
    let elected = new_leader(&compose, &victim, term, t).await?;
    let resumed = wait_resumed(&published, &websub, t, "deliveries during the partition").await?;
    // The partition lasts until the majority side serves steadily.
    let publish = Some(publishing_recovered(&published, t).await?);
    let healed = Instant::now();
    compose
        .docker(&[
            "network", "connect", "--alias", &victim, &network, &container,
        ])
        .await?;
    let rejoined = healthy(&compose, Duration::from_secs(90)).await?;
    windows.push(("partition", t, Instant::now()));
    report.push((
        format!("partition ({victim}, the leader)"),
        format!(
            "majority leader {} · publishing back {} · WebSub {} · caught up after heal {}",
            ms(Some(elected)),
            ms(publish),
            ms(Some(resumed)),
            ms(Some(healed.elapsed().min(rejoined)))
        ),
    ));

    // 3b. Two nodes killed at once: no quorum. The survivor stays in the load balancer and
    // keeps publishing and streaming; the control plane returns with the others.
    let survivor = leader(&compose)
        .await
        .map_or("node1".to_owned(), |(l, _)| l);
    let victims: Vec<&str> = NODES.iter().copied().filter(|n| *n != survivor).collect();
    let mut victim_containers = Vec::new();
    for v in &victims {
        victim_containers.push(compose.container(v).await?);
    }
    let t = Instant::now();
    for c in &victim_containers {
        compose.docker(&["kill", c]).await?;
    }
    let counted = |from: Instant, to: Instant| {
        let p = published.lock().unwrap();
        let ok = p
            .accepted
            .values()
            .filter(|at| **at >= from && **at <= to)
            .count();
        let failed = p
            .failures
            .iter()
            .filter(|at| **at >= from && **at <= to)
            .count();
        (ok, failed)
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    let lost_at = Instant::now();
    let (ok_all, failed_all) = counted(t, lost_at);
    let (ok_late, failed_late) = counted(t + Duration::from_secs(3), lost_at);
    let sse_during = sse
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, at)| *at >= t + Duration::from_secs(3) && *at <= lost_at)
        .count();
    for c in &victim_containers {
        compose.docker(&["start", c]).await?;
    }
    let restored = healthy(&compose, Duration::from_secs(90)).await?;
    windows.push(("quorum loss", t, Instant::now()));
    report.push((
        format!("quorum loss ({} killed, {survivor} left)", victims.join("+")),
        format!(
            "publishes accepted {ok_all} of {} in 10 s ({ok_late} of {} after the first 3 s) · SSE events meanwhile {sse_during} · cluster healthy {} after restart",
            ok_all + failed_all,
            ok_late + failed_late,
            ms(Some(restored))
        ),
    ));

    // 4. Rolling restart, one node at a time, each healthy before the next.
    let t = Instant::now();
    let failures_before = published.lock().unwrap().failures.len();
    for node in NODES {
        let container = compose.container(node).await?;
        compose.docker(&["restart", "-t", "20", &container]).await?;
        healthy(&compose, Duration::from_secs(90)).await?;
    }
    let took = t.elapsed();
    wait_resumed(
        &published,
        &websub,
        Instant::now(),
        "deliveries after the rolling restart",
    )
    .await?;
    let failed = published.lock().unwrap().failures.len() - failures_before;
    windows.push(("rolling restart", t, Instant::now()));
    report.push((
        "rolling restart".to_owned(),
        format!(
            "{} for three nodes · publishes refused meanwhile {failed}",
            ms(Some(took))
        ),
    ));

    // 5. Full stop and start of every node (broker and load balancer stay).
    let t = Instant::now();
    compose
        .compose(&["stop", "-t", "20", "node1", "node2", "node3"])
        .await?;
    let stopped = Instant::now();
    compose
        .compose(&["start", "node1", "node2", "node3"])
        .await?;
    let back = healthy(&compose, Duration::from_secs(120)).await?;
    let resumed = wait_resumed(
        &published,
        &websub,
        stopped,
        "deliveries after the full restart",
    )
    .await?;
    windows.push(("full stop/start", t, Instant::now()));
    report.push((
        "full stop and start".to_owned(),
        format!(
            "stop took {} · healthy {} after start · WebSub resumed {} after stop",
            ms(Some(stopped.duration_since(t))),
            ms(Some(back)),
            ms(Some(resumed))
        ),
    ));

    // Stop publishing; everything accepted must arrive everywhere.
    stop_publishing.store(true, Ordering::Relaxed);
    publishing.await?;
    let accepted: BTreeSet<u32> = published.lock().unwrap().accepted.keys().copied().collect();
    let refused = published.lock().unwrap().failures.len();
    for (name, got) in [("WebSub", &websub), ("SSE", &sse), ("WebSocket", &ws)] {
        let seen = |got: &Received| -> BTreeSet<u32> {
            got.lock().unwrap().iter().map(|(n, _)| *n).collect()
        };
        // Bounded: a failure below names what is missing.
        let _ = wait::until(
            &format!("{name} to have every accepted message"),
            Duration::from_secs(90),
            Duration::from_millis(250),
            || async { accepted.is_subset(&seen(got)).then_some(()) },
        )
        .await;
        let received = seen(got);
        let missing: Vec<u32> = accepted.difference(&received).copied().collect();
        assert!(
            missing.is_empty(),
            "{name} lost {} accepted messages: {:?}",
            missing.len(),
            &missing[..missing.len().min(20)]
        );
        let total = got.lock().unwrap().len();
        report.push((
            format!("{name} client"),
            format!(
                "{} accepted, {total} received, {} duplicates, lost 0",
                accepted.len(),
                total - received.len()
            ),
        ));
    }
    // The longest silence each client saw during each scenario (messages flow at 50/s, so
    // anything well above 20 ms is the interruption the fault caused).
    for (scenario, from, to) in &windows {
        let gaps: Vec<String> = [("WebSub", &websub), ("SSE", &sse), ("WebSocket", &ws)]
            .iter()
            .map(|(name, got)| {
                let mut times: Vec<Instant> = got
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(_, at)| *at)
                    .filter(|at| at >= from && at <= to)
                    .collect();
                times.sort();
                let longest = std::iter::once(*from)
                    .chain(times)
                    .collect::<Vec<_>>()
                    .windows(2)
                    .map(|w| w[1].duration_since(w[0]))
                    .max();
                format!("{name} {}", ms(longest))
            })
            .collect();
        report.push((format!("longest silence: {scenario}"), gaps.join(" · ")));
    }
    for (name, got) in [("WebSub", &websub), ("SSE", &sse), ("WebSocket", &ws)] {
        let mut seen = BTreeSet::new();
        let mut by_window: BTreeMap<&str, usize> = BTreeMap::new();
        for (n, at) in got.lock().unwrap().iter() {
            if !seen.insert(*n) {
                let window = windows
                    .iter()
                    .find(|(_, from, to)| *at >= *from && *at <= *to + Duration::from_secs(5))
                    .map_or("between scenarios", |(w, _, _)| *w);
                *by_window.entry(window).or_default() += 1;
            }
        }
        report.push((
            format!("{name} duplicates by scenario"),
            format!("{by_window:?}"),
        ));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = (sse_task.await, ws_task.await);
    report.push((
        "clients".to_owned(),
        format!("publishes refused during faults {refused} · SSE reconnects {} · WebSocket reconnects {}", sse_reconnects.lock().unwrap(), ws_reconnects.lock().unwrap()),
    ));

    // The subscription is still there, active.
    let owner = owner_of().await;
    assert!(owner.is_some(), "the subscription is gone");

    println!("\ncontainer chaos (docker-compose, 3 nodes, HAProxy, tansu):");
    for (scenario, figures) in &report {
        println!("  {scenario:<34} {figures}");
    }
    Ok(())
}
