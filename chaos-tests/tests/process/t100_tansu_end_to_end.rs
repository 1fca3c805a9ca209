use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::Method;
use axum::routing::any;
use axum::Router;
use eventgate_chaos_tests::sse::Sse;
use eventgate_chaos_tests::tansu::Tansu;
use eventgate_chaos_tests::{init_logging, wait, ClusterOptions, ProcessCluster};
use tracing::info;

type Log = Arc<Mutex<Vec<String>>>;

async fn callback(
    State(log): State<Log>,
    method: Method,
    RawQuery(query): RawQuery,
    body: String,
) -> String {
    if method == Method::GET {
        return eventgate_chaos_tests::websub_challenge(query.as_deref());
    }
    log.lock().unwrap().push(body);
    String::new()
}

async fn read(sse: &mut Sse, got: &mut Vec<String>, until: usize) -> anyhow::Result<()> {
    while got.len() < until {
        let event = tokio::time::timeout(Duration::from_secs(20), sse.next())
            .await
            .map_err(|_| anyhow::anyhow!("no SSE event after {} messages", got.len()))?
            .ok_or_else(|| anyhow::anyhow!("SSE stream ended after {}", got.len()))?;
        anyhow::ensure!(event.event.is_none(), "unexpected event {event:?}");
        got.push(event.data);
    }
    Ok(())
}

/// Three `eventgate` processes on a separate Kafka-protocol broker process (tansu): messages
/// published through one node reach a WebSub subscriber (subscribed through another) and an SSE
/// client (on the third), all in order; the SSE client resumes on another node by its last id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_on_a_separate_kafka_protocol_broker() -> anyhow::Result<()> {
    init_logging();
    let tansu = Tansu::start().await?;
    info!(bootstrap = %tansu.bootstrap, "--- tansu up");
    let log: Log = Arc::default();
    let app = Router::new()
        .route("/cb", any(callback))
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let cb = format!("http://{}/cb", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let cluster = ProcessCluster::start(ClusterOptions {
        extra_toml: format!(
            "[broker]\nkind = \"kafka\"\n[broker.kafka]\nbootstrap_servers = \"{}\"\n[topics]\nnames = [\"orders\"]\n[websub]\nallow_private_callbacks = true\n",
            tansu.bootstrap
        ),
        ..Default::default()
    })
    .await?;
    let base = |n: u64| cluster.nodes[&n].base_url();
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("hub.mode", "subscribe")
        .append_pair("hub.topic", "orders")
        .append_pair("hub.callback", &cb)
        .finish();
    let r = cluster
        .client()
        .post(format!("{}/hub", base(3)))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    wait::until(
        "the subscription to be active",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let list = eventgate_chaos_tests::get_json(
                cluster.client(),
                &format!("{}/admin/subscriptions", base(1)),
            )
            .await
            .ok()?;
            list.as_array()?
                .iter()
                .any(|s| s["state"] == "active" && s["owner"].is_u64())
                .then_some(())
        },
    )
    .await?;
    let mut sse = Sse::try_open(&format!("{}/sse/orders", base(2)), None).await?;

    let total = 200usize;
    for i in 0..total {
        let r = cluster
            .client()
            .post(format!("{}/webhook-receiver?topic=orders", base(1)))
            .header("content-type", "text/plain")
            .body(format!("m{i}"))
            .send()
            .await?;
        assert_eq!(r.status(), 202, "publish {i}");
    }
    let expected: Vec<String> = (0..total).map(|i| format!("m{i}")).collect();
    let mut got = Vec::new();
    read(&mut sse, &mut got, total / 2).await?;
    let last = sse.last_id.clone().expect("an id");
    drop(sse);
    let mut sse = Sse::try_open(&format!("{}/sse/orders", base(3)), Some(&last)).await?;
    read(&mut sse, &mut got, total).await?;
    assert_eq!(
        got, expected,
        "SSE: every message once, in order, across the resume"
    );
    wait::until(
        "every message at the WebSub callback",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async { (log.lock().unwrap().len() >= total).then_some(()) },
    )
    .await?;
    let delivered = log.lock().unwrap().clone();
    assert_eq!(delivered[..total], expected[..], "WebSub: in order");
    Ok(())
}
