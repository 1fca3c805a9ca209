use std::time::Duration;

use eventgate_chaos_tests::{init_logging, ClusterOptions, ProcessCluster};
use tokio::time::Instant;
use tracing::info;

/// A publish with an `Idempotency-Key` answered by node 1; node 1 is SIGKILLed (the client
/// never trusts the answer it got, as after a lost connection); the retry with the same key
/// through node 2 answers the same id — flagged `Idempotent-Replayed` — and publishes nothing
/// new. A key of another publish, on the same node, publishes. The time to the replayed answer
/// is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_retry_after_sigkill_answers_the_same_id() -> anyhow::Result<()> {
    init_logging();
    let mut cluster = ProcessCluster::start(ClusterOptions {
        extra_toml: "[topics]\nnames = [\"orders\"]\n".to_owned(),
        ..Default::default()
    })
    .await?;
    cluster
        .wait_for_leader(Duration::from_secs(10), None)
        .await?;
    let urls: std::collections::BTreeMap<u64, String> = (1..=3)
        .map(|n| {
            (
                n,
                format!(
                    "{}/webhook-receiver?topic=orders",
                    cluster.nodes[&n].base_url()
                ),
            )
        })
        .collect();
    let client = cluster.client().clone();
    let publish = |node: u64, key: &'static str, body: &'static str| {
        let url = urls[&node].clone();
        let client = client.clone();
        async move {
            // 503s while a leader is elected are retried (bounded).
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let r = client
                    .post(&url)
                    .header("idempotency-key", key)
                    .header("content-type", "text/plain")
                    .body(body)
                    .send()
                    .await?;
                let status = r.status().as_u16();
                let replayed = r.headers().contains_key("idempotent-replayed");
                let answer: serde_json::Value = r.json().await?;
                if status != 503 || Instant::now() > deadline {
                    return anyhow::Ok((status, replayed, answer));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let (status, replayed, first) = publish(1, "order-42", "order 42").await?;
    assert_eq!(status, 202, "{first}");
    assert!(!replayed);
    info!(%first, "--- SIGKILL node 1, which answered");
    cluster.kill(1)?;
    let started = Instant::now();
    let (status, replayed, again) = publish(2, "order-42", "order 42").await?;
    println!(
        "idempotent retry on node 2 after SIGKILL of node 1: {status} in {} ms, {again}",
        started.elapsed().as_millis()
    );
    assert_eq!(status, 202, "{again}");
    assert!(replayed, "the first answer, given again");
    assert_eq!(again, first, "the same id");
    // Another key is another publish; the same key with another body is refused.
    let (status, replayed, other) = publish(2, "order-43", "order 43").await?;
    assert_eq!((status, replayed), (202, false), "{other}");
    let (status, _, problem) = publish(3, "order-42", "another body").await?;
    assert_eq!(status, 422, "{problem}");
    Ok(())
}
