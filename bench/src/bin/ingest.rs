//! `/webhook-receiver` throughput and latency on the embedded broker, against a bare axum
//! server (no storage) measured in the same run with the same closed-loop client.
//!
//! `cargo build --release -p eventgate -p eventgate-bench && target/release/ingest --seconds 10 --concurrency 64`

use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Parser;
use eventgate_bench::{
    cpu_seconds, free_port, latency_histogram, summary, wait_ready, GatewayProcess,
};
use tokio::time::Instant;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[arg(long, default_value_t = 256)]
    body_bytes: usize,
}

struct Figures {
    requests: u64,
    seconds: f64,
    p99_ms: f64,
    server_cpu: f64,
}

async fn load(base: &str, pid: u32, args: &Args, name: &str) -> anyhow::Result<Figures> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let url = format!("{base}/webhook-receiver?topic=bench");
    let body = vec![b'x'; args.body_bytes];
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let client = client.clone();
        let url = url.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = latency_histogram();
            let mut failures = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                match client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 202 => {
                        h.record(t.elapsed().as_micros().max(1) as u64).ok();
                    }
                    _ => failures += 1,
                }
            }
            (h, failures)
        }));
    }
    let mut all = latency_histogram();
    let mut failures = 0;
    for t in tasks {
        let (h, f) = t.await?;
        all.add(&h)?;
        failures += f;
    }
    let seconds = started.elapsed().as_secs_f64();
    let server_cpu = cpu_seconds(pid) - cpu_before;
    println!(
        "{}  failures={failures}  server cpu {server_cpu:.2} s",
        summary(name, &all, seconds)
    );
    Ok(Figures {
        requests: all.len(),
        seconds,
        p99_ms: all.value_at_quantile(0.99) as f64 / 1000.0,
        server_cpu,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    println!(
        "ingest: {} closed-loop clients, {}-byte bodies, {} s each",
        args.concurrency, args.body_bytes, args.seconds
    );
    let gateway = GatewayProcess::start(free_port(), "[topics]\nnames = [\"bench\"]\n").await?;
    let g = load(
        &gateway.base,
        gateway.pid(),
        &args,
        "eventgate /webhook-receiver",
    )
    .await?;
    drop(gateway);

    let port = free_port();
    let bare_bin = std::env::current_exe()?.with_file_name("bare-server");
    let mut bare = Command::new(&bare_bin)
        .arg(port.to_string())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("{}: {e}", bare_bin.display()))?;
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/readyz")).await?;
    let b = load(&base, bare.id(), &args, "baseline: bare axum, no storage").await?;
    let _ = bare.kill();
    let _ = bare.wait();

    let rate = |f: &Figures| f.requests as f64 / f.seconds;
    let per_cpu = |f: &Figures| f.requests as f64 / f.server_cpu.max(0.001);
    println!(
        "eventgate/baseline: throughput {:.2}, requests per server CPU-second {:.2} ({:.0} vs {:.0}), p99 {:.2} ms vs {:.2} ms",
        rate(&g) / rate(&b),
        per_cpu(&g) / per_cpu(&b),
        per_cpu(&g),
        per_cpu(&b),
        g.p99_ms,
        b.p99_ms
    );
    Ok(())
}
