//! Signed WebSub deliveries per second to keep-alive local callbacks: 100 subscribers (each
//! with a secret) on one topic, M messages published, time until every subscriber has every
//! message. Run four times in one invocation, with the delivery ledger off, on, on, off
//! (`websub.ledger.enabled`), so that its cost is known (the means of each). Baseline in the same run: the same number of POSTs sent straight to the same
//! callback server by 100 concurrent reqwest tasks (the client/server ceiling here).
//!
//! `cargo build --release -p eventgate -p eventgate-bench && target/release/websub-throughput --subscribers 100 --messages 300`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::Method;
use axum::routing::any;
use axum::Router;
use clap::Parser;
use eventgate_bench::{cpu_seconds, free_port, GatewayProcess};
use tokio::time::Instant;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    #[arg(long, default_value_t = 300)]
    messages: usize,
    /// `websub.delivery_window` of the gateway.
    #[arg(long, default_value_t = 1)]
    window: usize,
}

async fn callback(
    State(count): State<Arc<AtomicU64>>,
    method: Method,
    RawQuery(query): RawQuery,
    _body: axum::body::Bytes,
) -> String {
    if method == Method::GET {
        return eventgate_chaos_tests::websub_challenge(query.as_deref());
    }
    count.fetch_add(1, Ordering::Relaxed);
    String::new()
}

async fn wait_count(count: &AtomicU64, target: u64, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while count.load(Ordering::Relaxed) < target {
        if Instant::now() > deadline {
            anyhow::bail!(
                "only {} of {target} deliveries within {timeout:?}",
                count.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let count = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route("/{*path}", any(callback))
        .with_state(count.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let cb_addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();

    // Off, on, on, off: the order's drift (warm-up of the machine and the callback server)
    // cancels out of the two means.
    let mut runs = [(0.0, 0.0); 2];
    for ledger in [false, true, true, false] {
        count.store(0, Ordering::Relaxed);
        let (rate, per_cpu) = gateway_run(&args, &client, cb_addr, &count, ledger).await?;
        runs[usize::from(ledger)].0 += rate / 2.0;
        runs[usize::from(ledger)].1 += per_cpu / 2.0;
    }
    let total = (args.subscribers * args.messages) as u64;

    // Baseline: the same POSTs straight from 100 concurrent tasks.
    count.store(0, Ordering::Relaxed);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.subscribers {
        let client = client.clone();
        let url = format!("http://{cb_addr}/cb/{i}");
        let messages = args.messages;
        tasks.push(tokio::spawn(async move {
            for n in 0..messages {
                let _ = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(format!(
                        "{{\"n\":{n},\"pad\":\"0123456789abcdef0123456789abcdef\"}}"
                    ))
                    .send()
                    .await;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    wait_count(&count, total, Duration::from_secs(60)).await?;
    let base_seconds = started.elapsed().as_secs_f64();
    let base_rate = total as f64 / base_seconds;
    println!("baseline: {total} direct POSTs in {base_seconds:.2} s = {base_rate:.0}/s");
    for (name, (rate, per_cpu)) in ["off", "on"].iter().zip(&runs) {
        println!(
            "eventgate (ledger {name}, mean of 2): {rate:.0}/s, {per_cpu:.0} per CPU-second; /baseline: {:.2}",
            rate / base_rate
        );
    }
    println!(
        "ledger on/off: {:.2} of the deliveries per second, {:.2} of the deliveries per CPU-second",
        runs[1].0 / runs[0].0,
        runs[1].1 / runs[0].1
    );
    Ok(())
}

/// One gateway with `args.subscribers` subscriptions, `args.messages` publishes: deliveries per
/// second and per gateway CPU-second until every subscriber has every message.
async fn gateway_run(
    args: &Args,
    client: &reqwest::Client,
    cb_addr: std::net::SocketAddr,
    count: &AtomicU64,
    ledger: bool,
) -> anyhow::Result<(f64, f64)> {
    let gateway = GatewayProcess::start(
        free_port(),
        &format!(
            "[topics]\nnames = [\"bench\"]\n[websub]\nallow_private_callbacks = true\ndelivery_window = {}\n[websub.ledger]\nenabled = {ledger}\n",
            args.window
        ),
    )
    .await?;
    for i in 0..args.subscribers {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("hub.mode", "subscribe")
            .append_pair("hub.topic", "bench")
            .append_pair("hub.callback", &format!("http://{cb_addr}/cb/{i}"))
            .append_pair("hub.secret", "benchmark-secret")
            .finish();
        let r = client
            .post(format!("{}/hub", gateway.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await?;
        anyhow::ensure!(r.status() == 202, "subscribe: {}", r.status());
    }
    // Wait until every subscription is active and owned.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let subs: Vec<serde_json::Value> = client
            .get(format!("{}/admin/subscriptions", gateway.base))
            .send()
            .await?
            .json()
            .await?;
        let ready = subs
            .iter()
            .filter(|s| s["state"] == "active" && !s["owner"].is_null())
            .count();
        if ready == args.subscribers {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{ready} of {} subscriptions ready",
            args.subscribers
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let total = (args.subscribers * args.messages) as u64;
    let cpu_before = cpu_seconds(gateway.pid());
    let started = Instant::now();
    let publish_url = format!("{}/webhook-receiver?topic=bench", gateway.base);
    for i in 0..args.messages {
        let r = client
            .post(&publish_url)
            .header("content-type", "application/json")
            .body(format!(
                "{{\"n\":{i},\"pad\":\"0123456789abcdef0123456789abcdef\"}}"
            ))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 202, "publish: {}", r.status());
    }
    wait_count(count, total, Duration::from_secs(600)).await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(gateway.pid()) - cpu_before;
    let rate = total as f64 / seconds;
    println!(
        "eventgate (window {}, ledger {}): {total} signed deliveries to {} subscribers in {seconds:.2} s = {rate:.0}/s; gateway CPU {cpu:.2} s = {:.0} deliveries per CPU-second",
        args.window,
        if ledger { "on" } else { "off" },
        args.subscribers,
        total as f64 / cpu.max(0.001)
    );
    drop(gateway);
    Ok((rate, total as f64 / cpu.max(0.001)))
}
