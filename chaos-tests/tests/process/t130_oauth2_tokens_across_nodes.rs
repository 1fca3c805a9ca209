use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventgate_chaos_tests::sse::Sse;
use eventgate_chaos_tests::{init_logging, ClusterOptions, ProcessCluster};
use tokio::time::Instant;
use tracing::info;

/// Asks node `via` for an access token of application `app`; 503s while a leader is elected
/// are retried (bounded).
async fn token(
    client: &reqwest::Client,
    base: &str,
    app: &str,
    secret: &str,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = client
            .post(format!("{base}/oauth2/token"))
            .basic_auth(app, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await?;
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await?;
        match status {
            200 => return Ok(body["access_token"].as_str().unwrap_or_default().to_owned()),
            503 if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => anyhow::bail!("token from {base}: {status} {body}"),
        }
    }
}

/// Three processes sharing a cluster secret key. A token issued by one node is verified by the
/// others, locally. The signing key is rotated five times through node 1 while nodes 2 and 3
/// issue tokens and each is used at once on another node: none is refused. Node 1 is killed:
/// the survivors still open the replicated (sealed) key and issue and verify tokens. Revoking
/// the client secret through node 2 ends a stream opened with its token on node 3. Counts and
/// times are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_verify_on_every_node_through_rotation_and_node_loss() -> anyhow::Result<()> {
    init_logging();
    let mut cluster = ProcessCluster::start(ClusterOptions {
        extra_toml: r#"[topics]
names = ["orders"]
[websub]
secret_key = "8c3f3b1e0f6a4d2b9e7c5a3f1d0b8e6c4a2f0d9b7e5c3a1f8d6b4e2c0a9f7d5b"
[auth.oauth2]
token_requests = { count = 100000, per = "1m" }
[apis.shop]
base_path = "/shop"
channels = { orders = "orders" }
security = ["oauth2"]
[plans.gold]
[applications.app]
permissions = [{ topics = "orders", publish = true, subscribe = true }]
access = { shop = "gold" }
"#
        .to_owned(),
        ..Default::default()
    })
    .await?;
    let client = cluster.client().clone();
    let base = |id: u64| cluster.nodes[&id].base_url();
    let bases: Vec<String> = (1..=3).map(base).collect();
    // Every node has applied the configuration.
    for b in &bases {
        let deadline = Instant::now() + Duration::from_secs(15);
        while client
            .get(format!("{b}/admin/applications/app"))
            .send()
            .await?
            .status()
            != 200
        {
            anyhow::ensure!(Instant::now() < deadline, "{b} never got the application");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let created: serde_json::Value = client
        .post(format!(
            "{}/admin/applications/app/client-secrets",
            bases[0]
        ))
        .send()
        .await?
        .json()
        .await?;
    let secret = created["client_secret"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no secret: {created}"))?
        .to_owned();
    let secret_id = created["id"].as_str().unwrap_or_default().to_owned();

    // Issued by node 2, verified by node 3.
    let first = token(&client, &bases[1], "app", &secret).await?;
    let r = client
        .post(format!("{}/shop/webhook-receiver?topic=orders", bases[2]))
        .bearer_auth(&first)
        .body("m")
        .send()
        .await?;
    assert_eq!(r.status(), 202, "{}", r.text().await?);

    // Rotation under load.
    let rotating = Arc::new(AtomicBool::new(true));
    let mut users = Vec::new();
    for (issuer, user) in [(1usize, 2usize), (2, 0), (2, 1), (1, 0)] {
        let (client, secret, rotating) = (client.clone(), secret.clone(), rotating.clone());
        let (issue_at, use_at) = (bases[issuer].clone(), bases[user].clone());
        users.push(tokio::spawn(async move {
            let (mut used, mut refused) = (0u32, Vec::new());
            for _ in 0..1000 {
                if !rotating.load(Ordering::Relaxed) {
                    break;
                }
                let t = match token(&client, &issue_at, "app", &secret).await {
                    Ok(t) => t,
                    Err(e) => {
                        refused.push(e.to_string());
                        continue;
                    }
                };
                let r = client
                    .post(format!("{use_at}/shop/webhook-receiver?topic=orders"))
                    .bearer_auth(&t)
                    .body("m")
                    .send()
                    .await;
                used += 1;
                match r {
                    Ok(r) if r.status() == 202 => {}
                    Ok(r) => refused.push(format!(
                        "{}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => refused.push(e.to_string()),
                }
            }
            (used, refused)
        }));
    }
    let started = Instant::now();
    let mut kids = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = client
            .post(format!("{}/admin/oauth2/keys/rotate", bases[0]))
            .send()
            .await?;
        let body: serde_json::Value = r.json().await?;
        kids.push(body["kid"].as_str().unwrap_or_default().to_owned());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    rotating.store(false, Ordering::Relaxed);
    let mut total = 0;
    for user in users {
        let (used, refused) = user.await?;
        assert!(refused.is_empty(), "valid tokens refused: {refused:?}");
        total += used;
    }
    println!(
        "5 signing-key rotations in {} ms through node 1: {total} tokens issued by nodes 2 and 3 and used at once on another node, none refused",
        started.elapsed().as_millis()
    );
    assert!(kids.iter().all(|k| !k.is_empty()), "{kids:?}");

    info!("--- SIGKILL node 1");
    cluster.kill(1)?;
    cluster
        .wait_for_leader(Duration::from_secs(10), Some(1))
        .await?;
    let after = token(&client, &bases[2], "app", &secret).await?;
    let mut sse = Sse::open(
        &format!("{}/shop/sse/orders?access_token={after}", bases[1]),
        None,
    )
    .await;
    // The first token, signed before the rotations, is still good on a survivor.
    let r = client
        .post(format!("{}/shop/webhook-receiver?topic=orders", bases[1]))
        .bearer_auth(&first)
        .header("content-type", "text/plain")
        .body("after")
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    let message = sse.expect(Duration::from_secs(5), "the message").await;
    assert_eq!(message.data, "after");

    // Revoking the secret through node 2 ends the stream on node 2 opened with node 3's token,
    // and node 3 refuses the token.
    let started = Instant::now();
    let r = client
        .delete(format!(
            "{}/admin/applications/app/client-secrets/{secret_id}",
            bases[1]
        ))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let close = sse
        .expect(Duration::from_secs(5), "close after revocation")
        .await;
    assert_eq!(close.event.as_deref(), Some("close"));
    assert!(close.data.contains("credential-revoked"), "{}", close.data);
    let r = client
        .post(format!("{}/shop/webhook-receiver?topic=orders", bases[2]))
        .bearer_auth(&after)
        .body("no")
        .send()
        .await?;
    assert_eq!(r.status(), 401);
    println!(
        "client secret revoked through node 2: stream ended and token refused on node 3 within {} ms",
        started.elapsed().as_millis()
    );
    Ok(())
}
