//! A running node: storage, TLS identity, the cluster transport, Raft, bootstrap or join, and
//! the HTTP gateway, started in that order and stopped in reverse on shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use eventgate_actors::broker::embedded::{EmbeddedBroker, EmbeddedConfig};
use eventgate_actors::broker::kafka::KafkaBroker;
use eventgate_actors::broker::mapped::MappedBroker;
use eventgate_actors::broker::mqtt::MqttBroker;
use eventgate_actors::broker::routed::RoutedBroker;
use eventgate_actors::broker::BrokerDriver;
use eventgate_actors::hub::{run_coordinator, HubSupervisor};
use eventgate_actors::stream::connection::Connections;
use eventgate_actors::stream::topic::TopicRegistry;
use eventgate_actors::subscription::{CursorCommitter, DeliveryContext};
use eventgate_raft_store::control::{join_cluster, ControlPlane};
use eventgate_raft_store::network::quic::QuicTransport;
use eventgate_raft_store::network::RpcNetworkFactory;
use eventgate_raft_store::state_machine::open_store;
use eventgate_raft_store::tls::{self, PemPair, TlsMaterial};
use eventgate_raft_store::{Command, NodeInfo, Raft};
use ractor::Actor;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{BrokerKind, NodeConfig, TlsSource};
use crate::error::{Error, Result};
use crate::http::{self, AppState};

/// Sockets bound before the node starts, so that callers (and tests) can bind port 0 and learn
/// the real addresses first.
#[derive(Debug)]
pub struct Listeners {
    pub http: tokio::net::TcpListener,
    pub cluster: std::net::UdpSocket,
}

impl Listeners {
    /// Binds the addresses of `config`.
    pub async fn bind(config: &NodeConfig) -> Result<Self> {
        let http = tokio::net::TcpListener::bind(config.http_listen)
            .await
            .map_err(|source| Error::Bind {
                what: "http.listen",
                addr: config.http_listen,
                source,
            })?;
        let cluster =
            std::net::UdpSocket::bind(config.cluster_listen).map_err(|source| Error::Bind {
                what: "cluster.listen",
                addr: config.cluster_listen,
                source,
            })?;
        Ok(Self { http, cluster })
    }
}

/// A started node.
#[derive(Debug)]
pub struct NodeHandle {
    pub http_addr: SocketAddr,
    pub cluster_addr: SocketAddr,
    pub control: ControlPlane,
    pub broker: Arc<dyn BrokerDriver>,
    task: JoinHandle<Result<()>>,
    fatal: Arc<std::sync::OnceLock<String>>,
}

impl NodeHandle {
    /// Waits for the node to stop (after its shutdown token is cancelled, or a fatal error).
    pub async fn wait(self) -> Result<()> {
        let result = match self.task.await {
            Ok(result) => result,
            Err(e) => Err(Error::Internal(format!("node task panicked: {e}"))),
        };
        match self.fatal.get() {
            Some(reason) => Err(Error::Internal(reason.clone())),
            None => result,
        }
    }
}

fn tls_material(config: &NodeConfig) -> Result<TlsMaterial> {
    let dir = config.data_dir.join("tls");
    match &config.tls {
        TlsSource::Files { ca_cert, cert, key } => Ok(TlsMaterial::load(ca_cert, cert, key)?),
        TlsSource::IssueFromCa { ca_cert, ca_key } => {
            let node_stem = format!("node-{}", config.node_id);
            if !dir.join(format!("{node_stem}.pem")).exists() {
                let ca = PemPair {
                    cert_pem: read_text(ca_cert)?,
                    key_pem: read_text(ca_key)?,
                };
                let names = advertised_hosts(config);
                let pair = tls::issue_node_cert(&ca, &node_stem, &names)?;
                tls::write_pair(&dir, &node_stem, &pair)?;
                tracing::info!(dir = %dir.display(), "issued this node's certificate from the cluster CA");
            }
            Ok(TlsMaterial::load(
                ca_cert,
                &dir.join(format!("{node_stem}.pem")),
                &dir.join(format!("{node_stem}.key")),
            )?)
        }
        TlsSource::SelfSigned => {
            if !dir.join("ca.pem").exists() {
                let ca = tls::generate_ca()?;
                tls::write_pair(&dir, "ca", &ca)?;
                let node = tls::issue_node_cert(&ca, "node", &advertised_hosts(config))?;
                tls::write_pair(&dir, "node", &node)?;
                tracing::warn!(
                    dir = %dir.display(),
                    "no tls configured: made a cluster CA for this node alone; other nodes can join only with certificates from it"
                );
            }
            Ok(TlsMaterial::load(
                &dir.join("ca.pem"),
                &dir.join("node.pem"),
                &dir.join("node.key"),
            )?)
        }
    }
}

fn advertised_hosts(config: &NodeConfig) -> Vec<String> {
    let mut names = vec!["localhost".to_owned()];
    for addr in [&config.cluster_advertise, &config.http_advertise] {
        if let Some((host, _)) = addr.rsplit_once(':') {
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            if !names.contains(&host) {
                names.push(host);
            }
        }
    }
    names
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Starts a node on pre-bound listeners. The node runs until `shutdown` is cancelled; then it
/// stops accepting HTTP, shuts Raft down, closes the QUIC endpoint and flushes storage.
pub async fn start(
    config: NodeConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<NodeHandle> {
    start_with_broker(config, listeners, shutdown, None).await
}

/// [`start`] with a broker given by the caller (one shared by several nodes, as an external
/// broker is) instead of the node's own embedded broker.
pub async fn start_with_broker(
    config: NodeConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
    shared_broker: Option<Arc<dyn BrokerDriver>>,
) -> Result<NodeHandle> {
    eventgate_raft_store::install_crypto_provider();
    let node_id = config.node_id;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| Error::Io {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    restrict_to_owner(&config.data_dir);
    let http_addr = listeners
        .http
        .local_addr()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let cluster_addr = listeners
        .cluster
        .local_addr()
        .map_err(|e| Error::Internal(e.to_string()))?;
    // With port 0 in the config, advertise the port actually bound.
    let advertise = |configured: &str, bound: SocketAddr| match configured.rsplit_once(':') {
        Some((host, "0")) => format!("{host}:{}", bound.port()),
        _ => configured.to_owned(),
    };
    let info = NodeInfo {
        raft_addr: advertise(&config.cluster_advertise, cluster_addr),
        http_addr: advertise(&config.http_advertise, http_addr),
    };

    let shared = shared_broker.is_some();
    let default_broker: Arc<dyn BrokerDriver> = match shared_broker {
        Some(broker) => broker,
        None => open_broker(&config.broker, largest_publish(&config)).await?,
    };
    let default_broker = MappedBroker::wrap(default_broker, config.broker.mapping.clone());
    // Every broker with its label for metrics: the default one by its kind, others by name.
    let mut probed: Vec<(String, Arc<dyn BrokerDriver>, std::time::Duration)> = vec![(
        default_broker.name().to_owned(),
        default_broker.clone(),
        config.broker.probe_interval,
    )];
    let mut routes = std::collections::BTreeMap::new();
    for (name, settings) in &config.brokers {
        let broker = MappedBroker::wrap(
            open_broker(settings, largest_publish(&config)).await?,
            settings.mapping.clone(),
        );
        tracing::info!(broker = %name, topics = ?settings.topics, "topics routed to a further broker");
        for topic in &settings.topics {
            routes.insert(topic.clone(), broker.clone());
        }
        probed.push((name.clone(), broker, settings.probe_interval));
    }
    let broker = RoutedBroker::wrap(default_broker, routes);
    let embedded = matches!(config.broker.kind, BrokerKind::Embedded);
    for topic in &config.topics {
        broker.ensure_topic(topic).await?;
    }
    if config.topics_auto_create {
        tracing::warn!("topics.auto_create is on: any publisher or subscriber can create topics");
    }
    if !shared && embedded && !config.seeds.is_empty() {
        tracing::warn!(
            "the embedded broker keeps each node's messages on that node: in a cluster, messages published on one node are not delivered by another; point the cluster at Kafka or MQTT"
        );
    }

    let (log_store, state_machine) =
        open_store(&config.data_dir.join("raft")).map_err(Error::ControlPlane)?;
    let reader = state_machine.reader();
    let broker = eventgate_actors::broker::typed::TypedBroker::wrap(
        broker,
        content_type_defaults(&config, reader.clone()),
    );
    let flusher = state_machine.clone();
    if config.websub.secret_key.is_none() && !config.dev_profile {
        tracing::warn!(
            "websub.secret_key is not configured: WebSub subscribers' secrets and the OAuth2 token signing keys are stored unsealed in the data directory; set it (the same 32-byte key on every node)"
        );
    }
    if config.admin_token.is_none() && !config.dev_profile {
        tracing::warn!(
            source = %config.source,
            "NO ADMIN TOKEN: admin.token is not configured, so the admin API (keys, applications, cluster) answers any program on this machine without authentication; set admin.token or EVENTGATE_ADMIN_TOKEN"
        );
    }
    let tls = tls_material(&config)?;
    let transport = QuicTransport::bind(listeners.cluster, &tls)?;
    let raft_config = Arc::new(config.raft.openraft_config()?);
    let contacts = eventgate_raft_store::network::PeerContacts::default();
    let raft = Raft::new(
        node_id,
        raft_config,
        RpcNetworkFactory::with_contacts(transport.clone(), contacts.clone()),
        log_store,
        state_machine,
    )
    .await
    .map_err(|e| Error::Internal(format!("raft: {e}")))?;
    let server_task = transport.serve(raft.clone(), config.write_timeout);
    let control = ControlPlane::new(
        node_id,
        raft.clone(),
        reader,
        transport.clone(),
        config.write_timeout,
    )
    .with_contacts(contacts);

    let fatal = Arc::new(std::sync::OnceLock::new());
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| Error::Internal(format!("raft: {e}")))?;
    if !initialized {
        if config.seeds.is_empty() {
            tracing::info!(
                node_id,
                "initializing a new cluster with this node as its only voter"
            );
            raft.initialize(BTreeMap::from([(node_id, info.clone())]))
                .await
                .map_err(|e| Error::Internal(format!("raft initialize: {e}")))?;
        } else {
            let transport = transport.clone();
            let seeds = config.seeds.clone();
            let info = info.clone();
            let deadline = tokio::time::Instant::now() + config.join_timeout;
            let shutdown = shutdown.clone();
            let fatal = fatal.clone();
            tokio::spawn(async move {
                tracing::info!(node_id, ?seeds, "joining the cluster");
                match join_cluster(transport.as_ref(), &seeds, node_id, info, deadline).await {
                    Ok(()) => tracing::info!(node_id, "joined the cluster as a voter"),
                    Err(e) => {
                        tracing::error!(node_id, error = %e, "could not join the cluster; stopping");
                        let _ = fatal.set(format!("could not join the cluster: {e}"));
                        shutdown.cancel();
                    }
                }
            });
        }
    } else {
        tracing::info!(node_id, "restarting with existing state");
    }

    let client = crate::outbound::HttpWebhookClient::new(config.websub.outbound.clone())
        .map_err(|e| Error::Internal(format!("callback client: {e}")))?;
    if config.websub.outbound.allow_private {
        tracing::warn!("websub.allow_private_callbacks is on: callbacks may reach loopback and private addresses");
    }
    let labels: Vec<String> = probed.iter().map(|(label, _, _)| label.clone()).collect();
    let metrics = Arc::new(crate::metrics::Metrics::new(&labels, &config.streams));
    let limiter = crate::limits::Limiter::new(
        control.clone(),
        std::time::Duration::from_secs(3),
        metrics.clone(),
    );
    let jwt = match &config.auth.jwt {
        Some(settings) => {
            let verifier = crate::auth::JwtVerifier::load(settings.clone())
                .await
                .map_err(Error::Internal)?;
            verifier.spawn_refresh(shutdown.clone());
            Some(verifier)
        }
        None => None,
    };
    let gate = crate::policy::Gatekeeper::new(control.reader().clone(), config.auth.anonymous, jwt)
        .with_internal_topics(crate::policy::InternalTopics {
            ledger: config
                .websub
                .ledger
                .enabled
                .then(|| config.websub.ledger.topic.clone()),
            events: config.websub.events_topic.clone(),
        });
    let port: Arc<dyn eventgate_actors::control::ControlPort> = Arc::new(control.clone());
    let endpoints_stop = CancellationToken::new();
    // The gateway's own topics (operator events, delivery ledger), created now if the broker
    // does so promptly (so that they can be subscribed to as soon as the node is up), else in
    // the background.
    let own_topics: Vec<String> = config
        .websub
        .events_topic
        .iter()
        .cloned()
        .chain(
            config
                .websub
                .ledger
                .enabled
                .then(|| config.websub.ledger.topic.clone()),
        )
        .collect();
    let ensure_all =
        futures_util::future::join_all(own_topics.iter().map(|t| broker.ensure_topic(t)));
    match tokio::time::timeout(std::time::Duration::from_secs(2), ensure_all).await {
        Ok(results) => {
            for (topic, result) in own_topics.iter().zip(results) {
                if let Err(e) = result {
                    tracing::warn!(%topic, error = %e, "the gateway's own topic not created");
                }
            }
        }
        Err(_) => {
            tracing::info!(topics = ?own_topics, "the gateway's own topics are being created in the background")
        }
    }
    let delivery = DeliveryContext {
        node_id,
        control: port.clone(),
        broker: broker.clone(),
        client: Arc::new(client),
        cursors: CursorCommitter::new(node_id, port.clone()),
        settings: config.websub.delivery.clone(),
        public_url: config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", info.http_addr)),
        secrets: Arc::new(match &config.websub.secret_key {
            Some(key) => eventgate_actors::secrets::SecretSealer::new(
                key,
                &config.websub.previous_secret_keys,
            ),
            None => eventgate_actors::secrets::SecretSealer::default(),
        }),
        policy: Some(Arc::new(crate::ingress::WebsubPolicy::new(
            gate.clone(),
            crate::limits::WebsubQuota::new(limiter.clone()),
        ))),
        metrics: metrics.delivery.clone(),
        endpoints: eventgate_actors::endpoints::Endpoints::start(
            port.clone(),
            config.websub.breaker.clone(),
            match &config.websub.events_topic {
                Some(topic) => eventgate_actors::endpoints::OperatorEvents::to_topic(
                    broker.clone(),
                    topic.clone(),
                    node_id,
                    metrics.breaker.events.clone(),
                ),
                None => eventgate_actors::endpoints::OperatorEvents::none(),
            },
            metrics.breaker.clone(),
            endpoints_stop.clone(),
        ),
        ledger: eventgate_actors::ledger::Ledger::start(
            broker.clone(),
            control.reader().clone(),
            node_id,
            config.websub.ledger.clone(),
            metrics.ledger_attempts.clone(),
            endpoints_stop.clone(),
        ),
        trace: crate::telemetry::delivery_trace(crate::telemetry::is_on()),
    };
    control.observe_writes(metrics.raft_write_latency.clone());
    let (hub, _) = Actor::spawn(None, HubSupervisor, delivery.clone())
        .await
        .map_err(|e| Error::Internal(format!("hub supervisor: {e}")))?;
    let committer_stop = CancellationToken::new();
    let committer = tokio::spawn(delivery.cursors.clone().run(committer_stop.clone()));
    let coordinator_stop = CancellationToken::new();
    let coordinator = tokio::spawn(run_coordinator(
        delivery.clone(),
        config.raft.coordinator(),
        coordinator_stop.clone(),
    ));

    let (topics, _) = TopicRegistry::start(broker.clone(), config.streams.clone())
        .await
        .map_err(|e| Error::Internal(format!("topic supervisor: {e}")))?;
    let connections = Connections::new(config.streams.max_connections);
    let probe_stop = CancellationToken::new();
    let probes: Vec<_> = probed
        .into_iter()
        .map(|(label, broker, every)| {
            tokio::spawn(crate::metrics::run_broker_probe(
                label,
                broker,
                metrics.clone(),
                every,
                probe_stop.clone(),
            ))
        })
        .collect();
    limiter.spawn_reporter(shutdown.clone(), std::time::Duration::from_secs(30));
    let declared = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Providers' secrets are sealed (under websub.secret_key, when set) before they enter the
    // replicated state, as subscribers' are.
    let mut declaration = config.declared.clone();
    for api in &mut declaration.apis {
        if let Some(v) = &mut api.verify_ingest {
            v.secret = delivery
                .secrets
                .seal(&crate::ingest_signature::seal_id(&api.name), &v.secret);
        }
    }
    tokio::spawn(declare_config(
        control.clone(),
        declaration,
        declared.clone(),
        shutdown.clone(),
    ));
    let state = AppState::new(
        control.clone(),
        broker.clone(),
        delivery,
        &config,
        shutdown.clone(),
        http::Services {
            topics: topics.clone(),
            connections: connections.clone(),
            metrics,
            gate,
            limiter,
            declared,
        },
    );
    let app = http::router(state);
    let serve_limits = config.http_limits.clone();
    let http_shutdown = shutdown.clone();
    let leaving = control.clone();
    let handover_timeout = config.handover_timeout;
    let task = tokio::spawn(async move {
        tracing::info!(node_id, http = %http_addr, cluster = %cluster_addr, "node started");
        crate::http::serve::serve(listeners.http, app, serve_limits, async move {
            http_shutdown.cancelled().await;
            // Hand this node's WebSub subscriptions over (drained, at their exact cursors)
            // while everything still runs: a rolling restart pauses each for moments.
            hand_over_subscriptions(&leaving, leaving.node_id(), handover_timeout).await;
            // Streams never end by themselves: close them (going-away) so that the graceful
            // shutdown of HTTP can complete.
            connections.shutdown().await;
        })
        .await;
        tracing::info!(node_id, "stopping: http closed; stopping deliveries");
        let _ = topics
            .supervisor()
            .stop_and_wait(None, Some(std::time::Duration::from_secs(5)))
            .await;
        probe_stop.cancel();
        for probe in probes {
            let _ = probe.await;
        }
        coordinator_stop.cancel();
        let _ = coordinator.await;
        // Stop the subscription actors, then commit the cursor moves they made: before Raft
        // goes away.
        let _ = hub
            .stop_and_wait(
                Some("node stopping".to_owned()),
                Some(std::time::Duration::from_secs(10)),
            )
            .await;
        committer_stop.cancel();
        let _ = committer.await;
        endpoints_stop.cancel();
        tracing::info!(node_id, "shutting raft down");
        if let Err(e) = raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        transport.shutdown().await;
        server_task.abort();
        if let Err(e) = flusher.flush().await {
            tracing::warn!(error = %e, "final storage flush failed");
        }
        tracing::info!(node_id, "stopped");
        Ok(())
    });

    Ok(NodeHandle {
        http_addr,
        cluster_addr,
        control,
        broker,
        task,
        fatal,
    })
}

/// Tells the cluster that member `node` is leaving and waits (at most `timeout`) until it owns
/// no WebSub subscription: the leader hands a live member's over (drained, at their exact
/// cursors) and gives a dead member's to others at once. For this node alone in its cluster
/// it does nothing (nobody could take over).
pub(crate) async fn hand_over_subscriptions(
    control: &ControlPlane,
    node: eventgate_raft_store::NodeId,
    timeout: std::time::Duration,
) {
    // Someone must be able to take over: a voter other than `node` that is not leaving
    // itself (when the whole cluster stops, nobody waits for anybody).
    let voters: Vec<_> = control
        .raft()
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    let others = |c: &ControlPlane| {
        c.reader().read(|s| {
            voters
                .iter()
                .any(|v| *v != node && !s.nodes.get(v).is_some_and(|l| l.leaving))
        })
    };
    let owned = |c: &ControlPlane| {
        c.reader().read(|s| {
            s.subscriptions
                .values()
                .filter(|sub| sub.owner == Some(node))
                .count()
        })
    };
    if !others(control) || owned(control) == 0 {
        return;
    }
    let started = tokio::time::Instant::now();
    let leaving = Command::NodeLeaving {
        node,
        at_ms: eventgate_raft_store::clock::now_ms(),
    };
    // Without a quorum (the whole cluster stopping) nobody could take over anyway: do not wait
    // long for it.
    let announce = timeout.min(std::time::Duration::from_secs(2));
    match tokio::time::timeout(announce, control.write(leaving)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not announce leaving; stopping without handing over");
            return;
        }
        Err(_) => {
            tracing::warn!("leaving not announced in time; stopping without handing over");
            return;
        }
    }
    let mut applied = control.reader().watch_applied();
    let rest = timeout.saturating_sub(started.elapsed());
    let done = tokio::time::timeout(rest, async {
        // Until nothing is left, or nobody is left to take it (every voter stopping at once).
        while owned(control) > 0 && others(control) {
            if applied.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    match done {
        Ok(()) if owned(control) == 0 => tracing::info!(
            node,
            millis = started.elapsed().as_millis() as u64,
            "every subscription handed over"
        ),
        Ok(()) => tracing::info!(
            node,
            left = owned(control),
            "no other member to hand subscriptions over to (the cluster is stopping); their next owners repeat what was not committed"
        ),
        Err(_) => tracing::warn!(
            left = owned(control),
            "subscriptions not all handed over in time; their next owners repeat what was not committed"
        ),
    }
}

/// The largest payload a client may publish (a webhook body or a WebSocket frame).
fn largest_publish(config: &NodeConfig) -> usize {
    config
        .webhook_max_body_bytes
        .max(config.streams.max_publish_bytes)
}

/// The default content type of each gateway topic's messages that carry none (another
/// producer's Kafka records without a `content-type` header): `topics.content_types`, else the
/// content type the messages of the topic's API channel are declared with (AsyncAPI
/// `contentType`, `defaultContentType`; when they agree on one; the first API by name that
/// declares one), else the topic's broker's `content_type`. MQTT drivers give every message a
/// type of their own (`broker.mqtt.content_type`), so this applies to Kafka (and to nothing
/// else in practice).
fn content_type_defaults(
    config: &NodeConfig,
    reader: eventgate_raft_store::StateReader,
) -> eventgate_actors::broker::typed::DefaultContentType {
    let of_broker = |settings: &crate::config::BrokerSettings| match &settings.kind {
        BrokerKind::Kafka(k) => k.content_type.clone(),
        _ => None,
    };
    let default = of_broker(&config.broker);
    let routed: std::collections::BTreeMap<String, Option<String>> = config
        .brokers
        .iter()
        .flat_map(|(_, s)| s.topics.iter().map(move |t| (t.clone(), of_broker(s))))
        .collect();
    let topics = config.topic_content_types.clone();
    Arc::new(move |topic: &str| {
        topics
            .get(topic)
            .cloned()
            .or_else(|| reader.read(|s| api_content_type(&s.governance, topic)))
            .or_else(|| {
                routed
                    .get(topic)
                    .cloned()
                    .unwrap_or_else(|| default.clone())
            })
    })
}

/// The one content type the messages of `topic`'s API channels are declared with.
fn api_content_type(
    g: &eventgate_raft_store::governance::Governance,
    topic: &str,
) -> Option<String> {
    g.apis.values().find_map(|api| {
        let mut types = api
            .channels
            .iter()
            .filter(|(_, t)| t.as_str() == topic)
            .filter_map(|(channel, _)| api.channel_specs.get(channel))
            .flat_map(|spec| spec.messages.iter().map(|m| m.content_type.as_deref()));
        let first = types.next()??;
        types.all(|t| t == Some(first)).then(|| first.to_owned())
    })
}

/// Opens the driver of one configured broker (not yet name-mapped); `largest_publish` is
/// checked against what a Kafka broker accepts.
async fn open_broker(
    settings: &crate::config::BrokerSettings,
    largest_publish: usize,
) -> Result<Arc<dyn BrokerDriver>, Error> {
    Ok(match &settings.kind {
        BrokerKind::Kafka(kafka) => {
            tracing::info!(bootstrap = %kafka.bootstrap_servers, "broker: kafka");
            // The broker's default content type is applied above the driver, after the
            // topic's and its API's (`content_type_defaults`).
            let broker = KafkaBroker::new(eventgate_actors::broker::kafka::KafkaConfig {
                content_type: None,
                ..kafka.clone()
            })?;
            // What the broker itself accepts, checked against what the gateway is configured
            // to accept (in the background: the broker may be down at start).
            let checked = broker.clone();
            tokio::spawn(async move {
                match checked.broker_message_limit().await {
                    Ok(batch) if checked.message_limit() < largest_publish => tracing::warn!(
                        largest_publish,
                        broker_message_max_bytes = batch,
                        limit = checked.message_limit(),
                        "webhook_receiver.max_body_bytes or streams.max_publish_bytes is more than the Kafka broker accepts (its message.max.bytes): larger publishes are refused with 413 naming the broker's limit; raise message.max.bytes on the broker (and topics' max.message.bytes) or lower those settings"
                    ),
                    Ok(batch) => tracing::info!(broker_message_max_bytes = batch, "Kafka broker's message size limit checked"),
                    Err(e) => tracing::info!(error = %e, "the Kafka broker's message size limit is unknown"),
                }
            });
            broker
        }
        BrokerKind::Mqtt(mqtt) => {
            tracing::info!(host = %mqtt.host, port = mqtt.port, "broker: mqtt");
            let broker = MqttBroker::new(mqtt.clone());
            if !broker.wait_connected(mqtt.request_timeout).await {
                tracing::warn!(
                    "the MQTT broker does not answer yet; publishes get 503 until it does"
                );
            }
            broker
        }
        BrokerKind::Embedded => EmbeddedBroker::open(EmbeddedConfig {
            dir: settings.dir.clone(),
            segment_bytes: settings.segment_bytes,
            retention_age: settings.retention,
            retention_bytes: settings.retention_bytes,
            max_message_bytes: settings.max_message_bytes,
        })?,
    })
}

/// Applies what the configuration file declares (APIs, plans, applications, keys) to the
/// replicated state, retrying until the cluster takes it: every node starts with the same file,
/// so whichever writes last writes the same thing.
/// Makes the data directory readable by its owner only (0700): it holds the replicated state,
/// WebSub secrets among it, and the broker's messages. Files inside keep whatever mode sled
/// and the broker give them; the directory keeps everyone else out of all of them.
fn restrict_to_owner(dir: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // A directory this user does not own (a mount prepared by someone else) cannot be
        // changed: say so loudly rather than refuse to start.
        if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
            tracing::warn!(dir = %dir.display(), error = %e, "the data directory could not be made private (0700): make it so, it holds WebSub secrets");
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
}

async fn declare_config(
    control: ControlPlane,
    mut declared: eventgate_raft_store::governance::Declared,
    applied: Arc<std::sync::atomic::AtomicBool>,
    shutdown: CancellationToken,
) {
    let now = eventgate_raft_store::clock::now_ms();
    for api in &mut declared.apis {
        api.updated_at_ms = now;
    }
    for plan in &mut declared.plans {
        plan.updated_at_ms = now;
    }
    for app in &mut declared.applications {
        app.updated_at_ms = now;
    }
    for access in &mut declared.access {
        access.updated_at_ms = now;
    }
    for key in &mut declared.keys {
        key.created_at_ms = now;
    }
    let mut backoff = std::time::Duration::from_millis(200);
    loop {
        let written = tokio::select! {
            () = shutdown.cancelled() => return,
            written = control.write(eventgate_raft_store::Command::Declare(declared.clone())) => written,
        };
        match written {
            Ok(eventgate_raft_store::Response::Refused { reason }) => {
                tracing::error!(%reason, "part of the configuration's APIs, plans or applications was not applied");
                applied.store(true, std::sync::atomic::Ordering::Release);
                return;
            }
            Ok(_) => {
                tracing::info!(
                    apis = declared.apis.len(),
                    plans = declared.plans.len(),
                    applications = declared.applications.len(),
                    "configuration's API management applied"
                );
                applied.store(true, std::sync::atomic::Ordering::Release);
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "declaring the configuration's APIs: retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}
