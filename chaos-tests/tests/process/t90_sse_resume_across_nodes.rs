use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use eventgate_chaos_tests::sse::Sse;
use eventgate_chaos_tests::{init_logging, ClusterOptions, ProcessCluster};
use rdkafka::mocking::MockCluster;
use tokio::time::Instant;
use tracing::info;

const WAIT: Duration = Duration::from_secs(20);

/// Reads events until `count` messages (ids and `k:i` payloads) are collected or the stream
/// ends; the messages are appended to `got`.
async fn read(sse: &mut Sse, got: &mut Vec<(u32, u32)>, until: usize) -> bool {
    while got.len() < until {
        match tokio::time::timeout(WAIT, sse.next()).await {
            Ok(Some(event)) if event.event.is_none() => {
                let (k, i) = event.data.split_once(':').expect("k:i");
                got.push((k.parse().unwrap(), i.parse().unwrap()));
            }
            Ok(Some(event)) => panic!("unexpected event {event:?}"),
            Ok(None) => return false,
            Err(_) => panic!("no event in {WAIT:?} after {} messages", got.len()),
        }
    }
    true
}

/// Three `eventgate` processes on one Kafka topic of three partitions (librdkafka's mock
/// cluster on loopback TCP). An SSE client reads from node 1, leaves, and resumes on node 2
/// with its last event id; later node 2 is SIGKILLed under it and it resumes on node 3. Over
/// the whole run it receives every message exactly once, in order per partition (per key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resumes_on_another_node_exactly_after_its_last_id() -> anyhow::Result<()> {
    init_logging();
    let mock = MockCluster::new(1)?;
    mock.create_topic("feed", 3, 1)?;
    let mut cluster = ProcessCluster::start(ClusterOptions {
        extra_toml: format!(
            "[broker]\nkind = \"kafka\"\n[broker.kafka]\nbootstrap_servers = \"{}\"\n[topics]\nnames = [\"feed\"]\n",
            mock.bootstrap_servers()
        ),
        ..Default::default()
    })
    .await?;
    let urls: BTreeMap<u64, String> = (1..=3)
        .map(|n| (n, format!("{}/sse/feed", cluster.nodes[&n].base_url())))
        .collect();

    let mut sse = Sse::try_open(&urls[&1], None).await?;
    let total = 3000u32;
    let client = cluster.client().clone();
    let publishers = [cluster.nodes[&1].base_url(), cluster.nodes[&3].base_url()];
    let publishing = tokio::spawn(async move {
        let started = Instant::now();
        for i in 0..total {
            // A steady 1000 messages a second, keyed over the three partitions.
            tokio::time::sleep_until(started + Duration::from_millis(u64::from(i))).await;
            let base = &publishers[i as usize % publishers.len()];
            let r = client
                .post(format!("{base}/webhook-receiver?topic=feed&key=k{}", i % 3))
                .header("content-type", "text/plain")
                .body(format!("{}:{i}", i % 3))
                .send()
                .await
                .expect("publish");
            assert_eq!(r.status(), 202, "publish {i}");
        }
    });

    let mut got = Vec::new();
    assert!(
        read(&mut sse, &mut got, 600).await,
        "node 1 ended the stream"
    );
    let last = sse.last_id.clone().expect("an id");
    drop(sse);
    info!(%last, "--- left node 1; resuming on node 2");
    let mut sse = Sse::try_open(&urls[&2], Some(&last)).await?;
    assert!(
        read(&mut sse, &mut got, 1500).await,
        "node 2 ended the stream early"
    );
    info!("--- SIGKILL node 2 under the client");
    cluster.kill(2)?;
    // The stream breaks; what was read before the break counts, then resume on node 3.
    let broke = !read(&mut sse, &mut got, total as usize).await;
    assert!(broke, "the stream from a killed node must end");
    let last = sse.last_id.clone().expect("an id");
    info!(%last, read = got.len(), "--- resuming on node 3");
    let mut sse = Sse::try_open(&urls[&3], Some(&last)).await?;
    assert!(
        read(&mut sse, &mut got, total as usize).await,
        "node 3 ended the stream"
    );
    publishing.await?;

    // Every message exactly once, in order per key.
    let distinct: BTreeSet<u32> = got.iter().map(|(_, i)| *i).collect();
    assert_eq!(got.len(), distinct.len(), "duplicates");
    assert_eq!(
        distinct,
        (0..total).collect::<BTreeSet<_>>(),
        "missing messages"
    );
    let mut per_key: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (k, i) in &got {
        per_key.entry(*k).or_default().push(*i);
    }
    for (k, seq) in &per_key {
        assert!(seq.windows(2).all(|w| w[0] < w[1]), "key {k} out of order");
    }
    Ok(())
}
