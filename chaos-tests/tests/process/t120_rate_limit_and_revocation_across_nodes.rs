use std::time::Duration;

use eventgate_chaos_tests::sse::Sse;
use eventgate_chaos_tests::{eventgate_bin, init_logging, run_ok, ClusterOptions, ProcessCluster};
use tokio::time::Instant;
use tracing::info;

const LIMIT: u64 = 40;

/// A key and its SHA-256 from `eventgate keys generate`.
fn generate_key() -> anyhow::Result<(String, String)> {
    let out = run_ok(&eventgate_bin(), &["keys", "generate"])?;
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| anyhow::anyhow!("no `{name}` in {out}"))
    };
    Ok((field("key:")?, field("sha256:")?))
}

/// Publishes to `orders` through node `via` with `key` until the first answer that is not
/// 202; answers how many were accepted and that answer's status. 503s while the cluster
/// elects a leader are retried (bounded).
async fn publish_until_refused(
    cluster: &ProcessCluster,
    via: u64,
    key: &str,
    at_most: u64,
) -> anyhow::Result<(u64, u16)> {
    let url = format!(
        "{}/webhook-receiver?topic=orders",
        cluster.nodes[&via].base_url()
    );
    let mut accepted = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while accepted < at_most {
        anyhow::ensure!(
            Instant::now() < deadline,
            "publishing on node {via} took too long"
        );
        let r = cluster
            .client()
            .post(&url)
            .header("x-api-key", key)
            .body(format!("m{accepted}"))
            .send()
            .await?;
        match r.status().as_u16() {
            202 => accepted += 1,
            503 => tokio::time::sleep(Duration::from_millis(50)).await,
            other => return Ok((accepted, other)),
        }
    }
    Ok((accepted, 202))
}

/// Three processes. Quota consumed on a node survives its SIGKILL: a client at its publish
/// quota on node 1 is still limited on node 2 after node 1 dies, and one halfway through its
/// quota gets only the rest. Then a key revoked through node 2 ends a stream on node 3 and is
/// refused there within a second. The counts and times are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_survives_sigkill_and_revocation_reaches_every_node() -> anyhow::Result<()> {
    init_logging();
    // A day-long window: the test runs within one (unless it straddles midnight UTC).
    let (full_key, full_hash) = generate_key()?;
    let (half_key, half_hash) = generate_key()?;
    let mut cluster = ProcessCluster::start(ClusterOptions {
        extra_toml: format!(
            r#"[topics]
names = ["orders"]
[apis.shop]
channels = {{ orders = "orders" }}
security = ["api_key"]
[plans.limited]
publish = {{ count = {LIMIT}, per = "24h" }}
[applications.full]
permissions = [{{ topics = "orders", publish = true, subscribe = true }}]
api_key_hashes = ["{full_hash}"]
access = {{ shop = "limited" }}
[applications.half]
permissions = [{{ topics = "orders", publish = true }}]
api_key_hashes = ["{half_hash}"]
access = {{ shop = "limited" }}
"#
        ),
        ..Default::default()
    })
    .await?;
    // Every node has applied the configuration's applications.
    for id in 1..=3u64 {
        let url = format!("{}/admin/applications/half", cluster.nodes[&id].base_url());
        let deadline = Instant::now() + Duration::from_secs(15);
        while cluster.client().get(&url).send().await?.status() != 200 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "node {id} never got the applications"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let (full_on_1, status) = publish_until_refused(&cluster, 1, &full_key, 1000).await?;
    assert_eq!(
        (full_on_1, status),
        (LIMIT, 429),
        "the full quota on node 1"
    );
    let (half_on_1, _) = publish_until_refused(&cluster, 1, &half_key, LIMIT / 2 + 5).await?;
    assert_eq!(half_on_1, LIMIT / 2 + 5);

    info!("--- SIGKILL node 1");
    cluster.kill(1)?;
    let (full_on_2, status) = publish_until_refused(&cluster, 2, &full_key, 1000).await?;
    let (half_on_2, _) = publish_until_refused(&cluster, 2, &half_key, 1000).await?;
    println!(
        "publish quota {LIMIT}/24h across SIGKILL of node 1: client at quota: {full_on_1} allowed on node 1, {full_on_2} on node 2 (then {status}); client part-way: {half_on_1} on node 1, {half_on_2} on node 2, {} in all",
        half_on_1 + half_on_2
    );
    assert_eq!((full_on_2, status), (0, 429), "still limited on node 2");
    // Node 1 reserved quota in chunks of a tenth; what it had reserved and not spent when it
    // died stays spent.
    let chunk = LIMIT.div_ceil(10);
    assert!(half_on_1 + half_on_2 <= LIMIT);
    assert!(
        half_on_1 + half_on_2 + chunk > LIMIT,
        "at most one chunk is lost"
    );

    // Revocation through node 2 reaches a stream and the key check on node 3.
    let mut sse = Sse::open(
        &format!(
            "{}/sse/orders?access_token={full_key}",
            cluster.nodes[&3].base_url()
        ),
        None,
    )
    .await;
    let key_id = &full_hash[..16];
    let revoke_url = format!(
        "{}/admin/applications/full/keys/{key_id}",
        cluster.nodes[&2].base_url()
    );
    let started = Instant::now();
    let r = cluster.client().delete(&revoke_url).send().await?;
    assert_eq!(r.status(), 200, "{}", r.text().await?);
    let committed = started.elapsed();
    let close = sse
        .expect(Duration::from_secs(5), "close after revocation")
        .await;
    let stream_ended = started.elapsed();
    assert_eq!(close.event.as_deref(), Some("close"));
    assert!(close.data.contains("credential-revoked"), "{}", close.data);
    let check = cluster
        .client()
        .get(format!(
            "{}/sse/orders?access_token={full_key}",
            cluster.nodes[&3].base_url()
        ))
        .send()
        .await?;
    let refused = started.elapsed();
    assert_eq!(check.status(), 401);
    println!(
        "key revoked through node 2: committed in {} ms; stream on node 3 ended after {} ms; node 3 refuses the key after {} ms",
        committed.as_millis(),
        stream_ended.as_millis(),
        refused.as_millis()
    );
    assert!(refused < Duration::from_secs(1));
    Ok(())
}
