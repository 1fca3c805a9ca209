//! OpenTelemetry traces, off unless an OTLP endpoint is configured (`tracing.otlp_endpoint`, or
//! the standard `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; OTLP over
//! HTTP with protobuf; `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off).
//!
//! One trace follows an event from the provider's POST to the subscriber's callback, across
//! nodes: the webhook receiver continues the caller's W3C `traceparent` (span `ingest`, with
//! `broker.publish` under it) and stores the context with the message (headers `traceparent`,
//! `tracestate`: Kafka headers, the embedded log's headers, MQTT 5 user properties — MQTT 3.1.1
//! carries no headers, so the trace ends at the broker there); whichever node delivers the
//! message to a WebSub callback continues it (span `websub.deliver` per attempt) and sends its
//! own `traceparent` to the callback. Streams open under `stream.open`, and the stream envelope
//! shows the message's `traceparent` among its headers.
//!
//! These spans are made with the OpenTelemetry API itself, not as `tracing` spans bridged by
//! `tracing-opentelemetry`: the context a span hands on must exist for certain, and through the
//! bridge it was sometimes empty (one delivery in three in chaos test t160 passed the stored
//! context on instead of its own).

use std::collections::HashMap;
use std::sync::Arc;

use eventgate_actors::broker::Message;
use eventgate_actors::subscription::DeliveryTrace;
use eventgate_raft_store::Subscription;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// Settings of the trace export (`[tracing]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracingSettings {
    /// OTLP/HTTP endpoint (`http://collector:4318`; `/v1/traces` is added when no path is
    /// given); `None`: the `OTEL_*` variables decide.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the spans (`OTEL_SERVICE_NAME` wins).
    pub service_name: String,
    /// How often finished spans are sent.
    pub export_interval: std::time::Duration,
}

impl Default for TracingSettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "eventgate".to_owned(),
            export_interval: std::time::Duration::from_secs(5),
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Whether traces are exported: an endpoint configured, and not switched off.
pub fn enabled(settings: &TracingSettings) -> bool {
    let off = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
    let endpoint = settings.otlp_endpoint.is_some()
        || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
    endpoint && !off
}

/// The exporting tracer provider of node `node_id` (`service.instance.id`), with the W3C trace
/// context as the process's propagator. Flush it with [`SdkTracerProvider::shutdown`] before
/// the process exits.
pub fn provider(settings: &TracingSettings, node_id: u64) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary);
    if let Some(endpoint) = &settings.otlp_endpoint {
        let rest = endpoint.split_once("://").map_or("", |(_, r)| r);
        let full = match rest.find('/') {
            Some(i) if &rest[i..] != "/" => endpoint.clone(),
            _ => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
        };
        builder = builder.with_endpoint(full);
    }
    let exporter = builder.build().map_err(|e| format!("OTLP exporter: {e}"))?;
    let service = env("OTEL_SERVICE_NAME").unwrap_or_else(|| settings.service_name.clone());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            node_id.to_string(),
        ))
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let batch = opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            opentelemetry_sdk::trace::BatchConfigBuilder::default()
                .with_scheduled_delay(settings.export_interval)
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_resource(resource)
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    ON.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(provider)
}

struct HeaderExtractor<'a>(&'a axum::http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct MessageExtractor<'a>(&'a [(String, Option<bytes::Bytes>)]);

impl Extractor for MessageExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .and_then(|(_, v)| std::str::from_utf8(v.as_deref()?).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_str()).collect()
    }
}

struct MapInjector(HashMap<String, String>);

impl Injector for MapInjector {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// Whether this process exports traces (set once its provider is made).
static ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process exports traces: without, nothing here does any work.
pub fn is_on() -> bool {
    ON.load(std::sync::atomic::Ordering::Relaxed)
}

/// An OpenTelemetry span made through the OpenTelemetry API itself (not a `tracing` span: its
/// context must exist for certain, since it is what the next hop continues); it ends when
/// dropped. Empty when traces are off.
#[derive(Debug, Default)]
pub struct Scope {
    cx: Option<opentelemetry::Context>,
}

impl Scope {
    /// A span `name` of `kind` under `parent`.
    fn start(
        name: &'static str,
        kind: opentelemetry::trace::SpanKind,
        parent: &opentelemetry::Context,
        attributes: Vec<opentelemetry::KeyValue>,
    ) -> Self {
        use opentelemetry::trace::{TraceContextExt, Tracer};
        let tracer = opentelemetry::global::tracer("eventgate");
        let span = tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&tracer, parent);
        Self {
            cx: Some(parent.with_span(span)),
        }
    }

    /// The span continuing an HTTP request's `traceparent` (a new trace without one).
    pub fn from_request(
        name: &'static str,
        headers: &axum::http::HeaderMap,
        attributes: Vec<opentelemetry::KeyValue>,
    ) -> Self {
        if !is_on() {
            return Self::default();
        }
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        Self::start(
            name,
            opentelemetry::trace::SpanKind::Server,
            &parent,
            attributes,
        )
    }

    /// A span under this one.
    pub fn child(&self, name: &'static str, attributes: Vec<opentelemetry::KeyValue>) -> Self {
        match &self.cx {
            Some(cx) => Self::start(
                name,
                opentelemetry::trace::SpanKind::Internal,
                cx,
                attributes,
            ),
            None => Self::default(),
        }
    }

    /// Its trace context as headers (`traceparent`, `tracestate`).
    pub fn headers(&self) -> Vec<(String, String)> {
        let Some(cx) = &self.cx else {
            return Vec::new();
        };
        let mut injector = MapInjector(HashMap::new());
        TraceContextPropagator::new().inject_context(cx, &mut injector);
        let mut out: Vec<(String, String)> = injector.0.into_iter().collect();
        out.sort();
        out
    }

    /// Marks it failed.
    pub fn error(&self, what: &str) {
        use opentelemetry::trace::TraceContextExt;
        if let Some(cx) = &self.cx {
            cx.span()
                .set_status(opentelemetry::trace::Status::error(what.to_owned()));
        }
    }
}

/// WebSub deliveries continue the trace stored with the message.
#[derive(Debug, Default)]
pub struct OtelDeliveryTrace;

impl DeliveryTrace for OtelDeliveryTrace {
    fn delivery(
        &self,
        sub: &Subscription,
        message: &Message,
        attempt: u32,
    ) -> (Box<dyn std::any::Any + Send>, Vec<(String, String)>) {
        use opentelemetry::KeyValue;
        let parent = TraceContextPropagator::new().extract(&MessageExtractor(&message.headers));
        let scope = Scope::start(
            "websub.deliver",
            opentelemetry::trace::SpanKind::Client,
            &parent,
            vec![
                KeyValue::new("eventgate.subscription", sub.id.clone()),
                KeyValue::new("eventgate.topic", sub.topic.clone()),
                KeyValue::new("eventgate.partition", i64::from(message.partition)),
                KeyValue::new("eventgate.offset", message.offset as i64),
                KeyValue::new("eventgate.attempt", i64::from(attempt)),
            ],
        );
        let headers = scope.headers();
        (Box::new(scope), headers)
    }
}

/// The delivery tracing of a node: OpenTelemetry's when traces are on.
pub fn delivery_trace(on: bool) -> Option<Arc<dyn DeliveryTrace>> {
    on.then(|| Arc::new(OtelDeliveryTrace) as Arc<dyn DeliveryTrace>)
}
