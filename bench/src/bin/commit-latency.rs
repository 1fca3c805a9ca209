//! Control-plane commit latency: sequential writes on one node and on three (in one process,
//! QUIC over loopback, sled on this disk), with a bare sled append + flush as the baseline.
//!
//! `cargo run --release -p eventgate-bench --bin commit-latency -- --writes 2000`

use std::time::Duration;

use clap::Parser;
use eventgate::config::{self, CliOverrides};
use eventgate::node::{self, Listeners, NodeHandle};
use eventgate_bench::{latency_histogram, summary};
use eventgate_raft_store::Command;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Args {
    /// Sequential writes per scenario.
    #[arg(long, default_value_t = 2000)]
    writes: u64,
}

struct Started {
    nodes: Vec<NodeHandle>,
    shutdown: CancellationToken,
}

async fn start_nodes(dir: &std::path::Path, n: u64) -> anyhow::Result<Started> {
    let shutdown = CancellationToken::new();
    let certs = dir.join("certs");
    let ca = eventgate_raft_store::tls::generate_ca()?;
    eventgate_raft_store::tls::write_pair(&certs, "ca", &ca)?;
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for id in 1..=n {
        let seeds = match nodes.first() {
            Some(first) => format!("[\"{}\"]", first.cluster_addr),
            None => "[]".to_owned(),
        };
        let path = dir.join(format!("node{id}.toml"));
        std::fs::write(
            &path,
            format!(
                "node_id = {id}\ndata_dir = \"{data}\"\n[http]\nlisten = \"127.0.0.{id}:0\"\n[cluster]\nlisten = \"127.0.0.{id}:0\"\nseeds = {seeds}\n[tls]\nca_cert = \"{c}/ca.pem\"\nca_key = \"{c}/ca.key\"\n",
                data = dir.join(format!("data{id}")).display(),
                c = certs.display(),
            ),
        )?;
        let config = config::load(Some(&path), &[], &CliOverrides::default())?;
        let listeners = Listeners::bind(&config).await?;
        let handle = node::start(config, listeners, shutdown.clone()).await?;
        handle
            .control
            .raft()
            .wait(Some(Duration::from_secs(30)))
            .metrics(|m| m.current_leader.is_some(), "leader known")
            .await?;
        nodes.push(handle);
    }
    let first = &nodes[0];
    first
        .control
        .raft()
        .wait(Some(Duration::from_secs(30)))
        .metrics(
            |m| m.membership_config.membership().voter_ids().count() == n as usize,
            "all voters",
        )
        .await?;
    Ok(Started { nodes, shutdown })
}

async fn measure(handle: &NodeHandle, name: &str, writes: u64) -> anyhow::Result<()> {
    let mut h = latency_histogram();
    let started = Instant::now();
    for i in 0..writes {
        let t = Instant::now();
        handle
            .control
            .write(Command::NodeHeartbeat {
                node: handle.control.node_id(),
                at_ms: i,
            })
            .await?;
        h.record(t.elapsed().as_micros().max(1) as u64)?;
    }
    println!("{}", summary(name, &h, started.elapsed().as_secs_f64()));
    Ok(())
}

async fn sled_flush_baseline(dir: &std::path::Path, writes: u64) -> anyhow::Result<u64> {
    let db = sled::Config::new()
        .path(dir.join("baseline"))
        .mode(sled::Mode::HighThroughput)
        .open()?;
    let tree = db.open_tree("log")?;
    let mut h = latency_histogram();
    let started = Instant::now();
    let payload = vec![7u8; 96];
    for i in 0..writes {
        let t = Instant::now();
        tree.insert(i.to_be_bytes(), payload.as_slice())?;
        db.flush_async().await?;
        h.record(t.elapsed().as_micros().max(1) as u64)?;
    }
    println!(
        "{}",
        summary(
            "baseline: sled insert + flush",
            &h,
            started.elapsed().as_secs_f64()
        )
    );
    Ok(h.value_at_quantile(0.5))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    println!(
        "commit latency, {} sequential writes each (one process, loopback)",
        args.writes
    );
    let base_p50 = sled_flush_baseline(dir.path(), args.writes).await?;

    let one = start_nodes(&dir.path().join("one"), 1).await?;
    measure(&one.nodes[0], "1 node", args.writes).await?;
    one.shutdown.cancel();
    for n in one.nodes {
        n.wait().await?;
    }

    let three = start_nodes(&dir.path().join("three"), 3).await?;
    let leader = three.nodes[0]
        .control
        .raft()
        .metrics()
        .borrow()
        .current_leader
        .unwrap_or(1);
    let leader_node = three
        .nodes
        .iter()
        .find(|n| n.control.node_id() == leader)
        .expect("leader among nodes");
    let follower = three
        .nodes
        .iter()
        .find(|n| n.control.node_id() != leader)
        .expect("a follower");
    measure(leader_node, "3 nodes, via leader", args.writes).await?;
    measure(follower, "3 nodes, via follower (forwarded)", args.writes).await?;
    three.shutdown.cancel();
    for n in three.nodes {
        n.wait().await?;
    }
    println!(
        "(baseline p50 {:.3} ms: the durable-flush floor on this disk)",
        base_p50 as f64 / 1000.0
    );
    Ok(())
}
