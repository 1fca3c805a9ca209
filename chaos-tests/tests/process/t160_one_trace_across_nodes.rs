use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use eventgate_chaos_tests::{init_logging, wait, ClusterOptions, ProcessCluster};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use rdkafka::mocking::MockCluster;

/// A span as the OTLP receiver got it: trace id (hex), name, and the node that sent it
/// (`service.instance.id`).
#[derive(Debug, Clone)]
struct Received {
    trace: String,
    span: String,
    name: String,
    node: String,
}

/// A real OTLP/HTTP receiver: decodes each `ExportTraceServiceRequest` (protobuf) it is sent.
async fn otlp_receiver() -> anyhow::Result<(String, Arc<Mutex<Vec<Received>>>)> {
    let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
    let store = spans.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let store = store.clone();
            async move {
                let Ok(request) = ExportTraceServiceRequest::decode(body.as_ref()) else {
                    return axum::http::StatusCode::BAD_REQUEST;
                };
                let mut store = store.lock().unwrap();
                for resource in request.resource_spans {
                    let node = resource
                        .resource
                        .iter()
                        .flat_map(|r| r.attributes.iter())
                        .find(|a| a.key == "service.instance.id")
                        .and_then(|a| a.value.as_ref())
                        .and_then(|v| match &v.value {
                            Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => Some(s.clone()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            store.push(Received {
                                trace: span.trace_id.iter().map(|b| format!("{b:02x}")).collect(),
                                span: span.span_id.iter().map(|b| format!("{b:02x}")).collect(),
                                name: span.name,
                                node: node.clone(),
                            });
                        }
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}"), spans))
}

/// One trace from the provider's POST to the subscriber's callback, across two nodes: a
/// publish with a W3C `traceparent` to node 1, delivered by node 2 (the subscription's owner):
/// the callback gets a `traceparent` of the same trace, and a real OTLP receiver gets the
/// spans of both nodes under that trace id (`ingest`, `broker.publish` from node 1,
/// `websub.deliver` from node 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_publish_to_callback_across_two_nodes() -> anyhow::Result<()> {
    init_logging();
    let mock = MockCluster::new(1)?;
    mock.create_topic("orders", 1, 1)?;
    let (otlp, spans) = otlp_receiver().await?;

    // The subscriber: records each delivery's traceparent.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    let app = Router::new().route(
        "/{*path}",
        axum::routing::any(
            move |method: axum::http::Method,
                  axum::extract::RawQuery(query): axum::extract::RawQuery,
                  headers: axum::http::HeaderMap| {
                let record = record.clone();
                async move {
                    if method == axum::http::Method::GET {
                        return eventgate_chaos_tests::websub_challenge(query.as_deref());
                    }
                    if let Some(tp) = headers.get("traceparent") {
                        record
                            .lock()
                            .unwrap()
                            .push(tp.to_str().unwrap_or_default().to_owned());
                    }
                    String::new()
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let cb_addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let cluster = ProcessCluster::start(ClusterOptions {
        extra_toml: format!(
            "[broker]\nkind = \"kafka\"\n[broker.kafka]\nbootstrap_servers = \"{}\"\n[topics]\nnames = [\"orders\"]\n[websub]\nallow_private_callbacks = true\n[tracing]\notlp_endpoint = \"{otlp}\"\nexport_interval = \"200ms\"\n",
            mock.bootstrap_servers()
        ),
        ..Default::default()
    })
    .await?;
    // A callback whose subscription node 2 delivers.
    let callback = (0..1000)
        .map(|i| format!("http://{cb_addr}/t{i}"))
        .find(|url| {
            let id = eventgate_actors::websub::subscription_id("orders", url);
            eventgate_actors::ownership::owner_of(&id, [1u64, 2, 3]) == Some(2)
        })
        .expect("a callback owned by node 2");
    let node1 = cluster.nodes[&1].base_url();
    let status = eventgate_chaos_tests::subscriber::subscribe(
        cluster.client(),
        &node1,
        "orders",
        &callback,
        None,
    )
    .await?;
    assert_eq!(status, 202);
    wait::until(
        "the subscription active on node 2",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let list = eventgate_chaos_tests::get_json(
                cluster.client(),
                &format!("{node1}/admin/subscriptions"),
            )
            .await
            .ok()?;
            list.as_array()?
                .iter()
                .any(|s| s["state"] == "active" && s["owner"] == 2)
                .then_some(())
        },
    )
    .await?;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let r = cluster
        .client()
        .post(format!("{node1}/webhook-receiver?topic=orders"))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .body("traced")
        .send()
        .await?;
    assert_eq!(r.status(), 202);

    let delivered = wait::until(
        "the delivery's traceparent",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async { seen.lock().unwrap().first().cloned() },
    )
    .await?;
    let parts: Vec<&str> = delivered.split('-').collect();
    assert_eq!(parts.len(), 4, "{delivered}");
    assert_eq!(
        parts[1], trace_id,
        "the callback continues the caller's trace"
    );
    assert_ne!(parts[2], caller_span, "under a span of the gateway's own");

    let by_node = wait::until(
        "spans of both nodes under the trace",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            let got = spans.lock().unwrap().clone();
            let mut by_node: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for s in got.iter().filter(|s| s.trace == trace_id) {
                by_node
                    .entry(s.node.clone())
                    .or_default()
                    .insert(s.name.clone());
            }
            let names: BTreeSet<&String> = by_node.values().flatten().collect();
            let complete = ["ingest", "broker.publish", "websub.deliver"]
                .iter()
                .all(|n| names.iter().any(|m| m.as_str() == *n));
            (complete && by_node.len() >= 2).then_some(by_node)
        },
    )
    .await
    .inspect_err(|_| {
        let got = spans.lock().unwrap().clone();
        eprintln!("delivered with {delivered}; spans received: {got:#?}");
    })?;
    tracing::info!(?by_node, "--- spans of the trace, by node");
    let node_of = |name: &str| {
        by_node
            .iter()
            .find(|(_, names)| names.contains(name))
            .map(|(node, _)| node.clone())
            .unwrap()
    };
    assert_ne!(node_of("ingest"), node_of("websub.deliver"), "{by_node:?}");
    assert_eq!(node_of("ingest"), "1", "{by_node:?}");
    assert_eq!(node_of("websub.deliver"), "2", "{by_node:?}");
    // The callback's traceparent names node 2's delivery span itself.
    let deliver_span = spans
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.trace == trace_id && s.name == "websub.deliver")
        .map(|s| s.span.clone());
    assert_eq!(deliver_span.as_deref(), Some(parts[2]), "{delivered}");
    drop(cluster);
    drop(mock);
    Ok(())
}
