use std::time::Duration;

use eventgate_chaos_tests::sse::Sse;
use eventgate_chaos_tests::{init_logging, ClusterOptions, ProcessCluster};
use tokio::time::Instant;
use tracing::info;

/// One `eventgate` process; 20 WebSocket clients that stop reading (tiny receive windows) and
/// one SSE client that reads, while 64 MiB are published to the topic. The reading client gets
/// every message promptly, and the gateway's resident memory grows by far less than what was
/// published: stalled clients hold the ring (bounded), not a backlog each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_do_not_grow_memory_or_slow_the_others() -> anyhow::Result<()> {
    init_logging();
    let cluster = ProcessCluster::start(ClusterOptions {
        nodes: 1,
        extra_toml: "[topics]\nnames = [\"firehose\"]\n[streams]\nring_batches = 64\nsend_timeout = \"60s\"\n".to_owned(),
        ..Default::default()
    })
    .await?;
    let node = &cluster.nodes[&1];
    let base = node.base_url();
    let ws_url = format!("{}/ws/firehose", base.replacen("http://", "ws://", 1));
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(4096)?;
        let stream = socket.connect(node.http).await?;
        let (ws, _) = tokio_tungstenite::client_async(ws_url.as_str(), stream).await?;
        stalled.push(ws);
    }
    let mut reader = Sse::try_open(&format!("{base}/sse/firehose"), None).await?;
    let rss_before = node.rss_kib();

    let total = 4096usize;
    let payload = "x".repeat(16 * 1024);
    let client = cluster.client().clone();
    let url = format!("{base}/webhook-receiver?topic=firehose");
    let (progress, mut read) = tokio::sync::watch::channel(0usize);
    let publishing = tokio::spawn(async move {
        for i in 0..total {
            // At most 64 messages ahead of the reading client.
            read.wait_for(|n| n + 64 >= i).await.expect("reader alive");
            let r = client
                .post(&url)
                .header("content-type", "text/plain")
                .body(format!("{i}:{payload}"))
                .send()
                .await
                .expect("publish");
            assert_eq!(r.status(), 202);
        }
    });
    let started = Instant::now();
    let mut peak = rss_before;
    for i in 0..total {
        let event = tokio::time::timeout(Duration::from_secs(10), reader.next())
            .await
            .map_err(|_| anyhow::anyhow!("the reading client stalled at message {i}"))?
            .ok_or_else(|| anyhow::anyhow!("the reading client's stream ended at {i}"))?;
        anyhow::ensure!(
            event.data.starts_with(&format!("{i}:")),
            "message {i} out of order"
        );
        progress.send_replace(i + 1);
        if i % 256 == 0 {
            peak = peak.max(node.rss_kib());
        }
    }
    publishing.await?;
    let elapsed = started.elapsed();
    peak = peak.max(node.rss_kib());
    let published_mib = (total * 16 * 1024) as f64 / 1048576.0;
    let growth_mib = peak.saturating_sub(rss_before) as f64 / 1024.0;
    info!(published_mib, growth_mib, ?elapsed, "--- done");
    println!(
        "published {published_mib:.0} MiB with 20 stalled clients: gateway RSS grew {growth_mib:.1} MiB; the reader took {elapsed:?}"
    );
    anyhow::ensure!(
        growth_mib < 32.0,
        "memory grew by {growth_mib:.1} MiB for {published_mib:.0} MiB published"
    );
    drop(stalled);
    Ok(())
}
