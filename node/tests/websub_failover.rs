//! WebSub across a three-node cluster (real Raft over QUIC between the nodes, in one process)
//! sharing one broker, as nodes share Kafka: when the owner of a subscription stops, another
//! node takes the subscription over from the replicated cursor; every message reaches every
//! subscriber at least once and in order.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use common::callback::CallbackServer;
use eventgate::config::{self, CliOverrides};
use eventgate::node::{self, Listeners, NodeHandle};
use eventgate_actors::broker::embedded::{EmbeddedBroker, EmbeddedConfig};
use eventgate_actors::broker::BrokerDriver;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

struct Member {
    handle: Option<NodeHandle>,
    shutdown: CancellationToken,
    base: String,
}

async fn start_member(
    dir: &std::path::Path,
    id: u64,
    seed: Option<String>,
    broker: Arc<dyn BrokerDriver>,
) -> Member {
    let seeds = seed.map_or("[]".to_owned(), |s| format!("[\"{s}\"]"));
    let path = dir.join(format!("node{id}.toml"));
    std::fs::write(
        &path,
        format!(
            "node_id = {id}\ndata_dir = \"{data}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[cluster]\nlisten = \"127.0.0.1:0\"\nseeds = {seeds}\n[tls]\nca_cert = \"{c}/ca.pem\"\nca_key = \"{c}/ca.key\"\n[topics]\nnames = [\"orders\"]\n[websub]\nallow_private_callbacks = true\nretry_base = \"20ms\"\nretry_max = \"200ms\"\n",
            data = dir.join(format!("data{id}")).display(),
            c = dir.join("certs").display(),
        ),
    )
    .unwrap();
    let config = config::load(Some(&path), &[], &CliOverrides::default()).unwrap();
    let listeners = Listeners::bind(&config).await.unwrap();
    let shutdown = CancellationToken::new();
    let handle = node::start_with_broker(config, listeners, shutdown.clone(), Some(broker))
        .await
        .unwrap();
    let base = format!("http://{}", handle.http_addr);
    Member {
        handle: Some(handle),
        shutdown,
        base,
    }
}

async fn get(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_stops_and_another_node_continues_every_subscription() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let ca = eventgate_raft_store::tls::generate_ca().unwrap();
    eventgate_raft_store::tls::write_pair(&dir.path().join("certs"), "ca", &ca).unwrap();
    let broker: Arc<dyn BrokerDriver> =
        EmbeddedBroker::open(EmbeddedConfig::new(dir.path().join("broker"))).unwrap();
    let client = reqwest::Client::new();

    let mut members = Vec::new();
    members.push(start_member(dir.path(), 1, None, broker.clone()).await);
    let seed = members[0].handle.as_ref().unwrap().cluster_addr.to_string();
    for id in 2..=3 {
        members.push(start_member(dir.path(), id, Some(seed.clone()), broker.clone()).await);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&client, &format!("{}/admin/cluster/node", members[0].base)).await["voters"]
        .as_array()
        .unwrap()
        .len()
        < 3
    {
        assert!(Instant::now() < deadline, "cluster never formed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let cb = CallbackServer::start().await;
    let n_subs = 6;
    for i in 0..n_subs {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("hub.mode", "subscribe")
            .append_pair("hub.topic", "orders")
            .append_pair("hub.callback", &cb.url(&format!("/s{i}")))
            .finish();
        let r = client
            .post(format!("{}/hub", members[i % 3].base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let owners: Vec<(String, u64)> = loop {
        let subs = get(&client, &format!("{}/admin/subscriptions", members[0].base)).await;
        let owned: Vec<(String, u64)> = subs
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["state"] == "active")
            .filter_map(|s| Some((s["callback"].as_str()?.to_owned(), s["owner"].as_u64()?)))
            .collect();
        if owned.len() == n_subs {
            break owned;
        }
        assert!(
            Instant::now() < deadline,
            "subscriptions never all owned: {subs}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let victim = owners[0].1;
    let moved: Vec<String> = owners
        .iter()
        .filter(|(_, o)| *o == victim)
        .map(|(c, _)| c.clone())
        .collect();
    println!(
        "owners: {owners:?}; stopping node {victim}, which owns {}",
        moved.len()
    );
    let publisher = members
        .iter()
        .position(|m| m.handle.as_ref().unwrap().control.node_id() != victim)
        .unwrap();
    let publish_base = members[publisher].base.clone();

    let total = 400u32;
    let published = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let publishing = {
        let client = client.clone();
        let published = published.clone();
        tokio::spawn(async move {
            for i in 0..total {
                let r = client
                    .post(format!("{publish_base}/webhook-receiver?topic=orders"))
                    .header("content-type", "text/plain")
                    .body(i.to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                published.store(i + 1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Stop the owner a third of the way through the stream.
    let deadline = Instant::now() + Duration::from_secs(30);
    while published.load(std::sync::atomic::Ordering::Relaxed) < total / 3 {
        assert!(Instant::now() < deadline, "publishing stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let victim_index = members
        .iter()
        .position(|m| m.handle.as_ref().unwrap().control.node_id() == victim)
        .unwrap();
    let stopped_at = Instant::now();
    let member = &mut members[victim_index];
    member.shutdown.cancel();
    member.handle.take().unwrap().wait().await.unwrap();
    // Deliveries until here may still come from the stopping owner.
    let stop_done = Instant::now();
    println!(
        "node {victim} stopped after {} ms",
        (stop_done - stopped_at).as_millis()
    );
    publishing.await.unwrap();

    for i in 0..n_subs {
        let path = format!("/s{i}");
        let posts = cb
            .wait_for(
                &Method::POST,
                &path,
                total as usize,
                Duration::from_secs(60),
            )
            .await;
        let bodies: Vec<u32> = posts
            .iter()
            .map(|p| String::from_utf8(p.body.to_vec()).unwrap().parse().unwrap())
            .collect();
        // At least once and in order: dropping repeats of what was already seen leaves 0..total.
        let mut seen = std::collections::BTreeSet::new();
        let firsts: Vec<u32> = bodies.iter().copied().filter(|b| seen.insert(*b)).collect();
        assert_eq!(
            firsts,
            (0..total).collect::<Vec<_>>(),
            "{path}: missing or out of order"
        );
        let duplicates = bodies.len() - firsts.len();
        println!(
            "{path}: {} deliveries, {duplicates} duplicates",
            bodies.len()
        );
    }
    // Resume: the first delivery on a moved subscription after the owner stopped.
    let resumed = moved
        .iter()
        .map(|c| {
            let path = c.trim_start_matches(&cb.url("")).to_owned();
            cb.requests(&Method::POST, &path)
                .iter()
                .map(|r| r.at)
                .find(|at| *at > stop_done)
        })
        .collect::<Vec<_>>();
    for (c, at) in moved.iter().zip(&resumed) {
        let at = at.expect("the moved subscription resumed");
        println!(
            "{c}: resumed {} ms after its owner stopped",
            (at - stopped_at).as_millis()
        );
    }
    for member in members.iter_mut().filter(|m| m.handle.is_some()) {
        member.shutdown.cancel();
        member.handle.take().unwrap().wait().await.unwrap();
    }
}
