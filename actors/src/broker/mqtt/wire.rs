//! The two MQTT protocol versions behind one face: rumqttc's 3.1.1 client and its MQTT 5
//! client differ in types, not in what the driver does with them. The driver speaks to
//! [`Client`] and reads [`Ev`]ents; this module turns both into the same shapes.
//!
//! What MQTT 5 adds, and what it carries here:
//! - a message's **content type** (the `Content Type` property);
//! - **headers** as user properties (name → UTF-8 value; a value that is not UTF-8 cannot be a
//!   user property and is not carried), and the **key** as the user property
//!   [`KEY_PROPERTY`];
//! - a **message expiry** on publishes (`broker.mqtt.message_expiry`);
//! - **reasons** on PUBACK and SUBACK (a refused publish fails instead of looking delivered);
//! - persistent sessions need a **session expiry**: WebSub sessions ask for one that never
//!   ends, the clean connection that drops a session asks for none.

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::{Outgoing, QoS};

use super::MqttConfig;
use crate::broker::{Message, OutgoingMessage};

/// The user property that carries a message's key on MQTT 5.
pub const KEY_PROPERTY: &str = "eventgate-key";

/// The message header that names the MQTT topic a message came on.
pub const TOPIC_HEADER: &str = "mqtt-topic";

/// Which MQTT the driver speaks (`broker.mqtt.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MqttVersion {
    /// MQTT 3.1.1: payloads only.
    V311,
    /// MQTT 5: content type, headers and key as properties, expiry, reason codes.
    #[default]
    V5,
}

/// A connection's request side.
pub(super) enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// A connection's event loop.
pub(super) enum Events {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

/// A message received, whichever the protocol; kept whole for its acknowledgement.
#[derive(Debug, Clone)]
pub(super) struct Incoming {
    pub(super) topic: String,
    pub(super) payload: Bytes,
    pub(super) content_type: Option<String>,
    pub(super) key: Option<Bytes>,
    pub(super) headers: Vec<(String, Bytes)>,
    /// Sent because a subscription was made (the broker's retained value of the topic), not
    /// because it was published to a subscription in place.
    pub(super) retain: bool,
    raw: Raw,
}

#[derive(Debug, Clone)]
enum Raw {
    V4(rumqttc::Publish),
    V5(p5::Publish),
}

impl Incoming {
    /// The message as readers see it: `default_type` when the publisher named none; the
    /// concrete MQTT topic it came on in the header [`TOPIC_HEADER`] (a gateway topic mapped to
    /// a wildcard filter reads many).
    pub(super) fn message(&self, offset: u64, timestamp_ms: u64, default_type: &str) -> Message {
        let mut headers: Vec<(String, Option<Bytes>)> = self
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), Some(value.clone())))
            .collect();
        headers.push((
            TOPIC_HEADER.to_owned(),
            Some(Bytes::copy_from_slice(self.topic.as_bytes())),
        ));
        Message {
            partition: 0,
            offset,
            timestamp_ms,
            key: self.key.clone(),
            headers,
            content_type: Some(
                self.content_type
                    .clone()
                    .unwrap_or_else(|| default_type.to_owned()),
            ),
            payload: self.payload.clone(),
            tombstone: false,
        }
    }
}

/// What a connection reports.
pub(super) enum Ev {
    ConnAck {
        result: Result<(), String>,
        session_present: bool,
    },
    SubAck {
        pkid: u16,
        result: Result<(), String>,
    },
    PubAck {
        pkid: u16,
        result: Result<(), String>,
    },
    Publish(Box<Incoming>),
    Out(Outgoing),
    Other,
}

fn error(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A client and its event loop for `client_id`. `clean`: start from no session;
/// `session_expiry` (MQTT 5, seconds): how long the broker keeps the session, and what
/// arrives for it, once the connection is gone (`None`: not at all; 3.1.1 keeps a session
/// that is not clean until it is cleaned).
/// Nagle is off: publishes wait for PUBACKs one round trip at a time, and Nagle would hold a
/// PUBLISH behind our own unacknowledged PUBACKs (tens of ms each with delayed ACKs).
pub(super) fn connect(
    config: &MqttConfig,
    client_id: String,
    clean: bool,
    session_expiry: Option<u32>,
    manual_acks: bool,
    capacity: usize,
    inflight: u16,
) -> (Client, Events) {
    let packet = config.max_message_bytes + 64 * 1024;
    let keep_alive = config.keep_alive.max(std::time::Duration::from_secs(1));
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(config.request_timeout.as_secs().max(1));
    match config.protocol {
        MqttVersion::V311 => {
            let mut o = rumqttc::MqttOptions::new(client_id, config.host.clone(), config.port);
            o.set_keep_alive(keep_alive)
                .set_clean_session(clean)
                .set_manual_acks(manual_acks)
                // Room for the topic and the fixed header around the largest payload.
                .set_max_packet_size(packet, packet)
                .set_inflight(inflight);
            if let (Some(u), Some(p)) = (&config.username, &config.password) {
                o.set_credentials(u.clone(), p.clone());
            }
            let (client, mut events) = rumqttc::AsyncClient::new(o, capacity);
            events.set_network_options(network);
            (Client::V4(client), Events::V4(Box::new(events)))
        }
        MqttVersion::V5 => {
            let mut o = rumqttc::v5::MqttOptions::new(client_id, config.host.clone(), config.port);
            o.set_keep_alive(keep_alive)
                .set_clean_start(clean)
                .set_manual_acks(manual_acks)
                .set_max_packet_size(Some(packet as u32))
                .set_outgoing_inflight_upper_limit(inflight)
                // MQTT 5 ends a session with its connection unless told otherwise.
                .set_session_expiry_interval(session_expiry)
                .set_network_options(network);
            if let (Some(u), Some(p)) = (&config.username, &config.password) {
                o.set_credentials(u.clone(), p.clone());
            }
            let (client, events) = rumqttc::v5::AsyncClient::new(o, capacity);
            (Client::V5(client), Events::V5(Box::new(events)))
        }
    }
}

impl Client {
    /// Queues a QoS 1 publish of `message` to `topic`.
    pub(super) fn publish(
        &self,
        topic: &str,
        message: &OutgoingMessage,
        expiry: Option<std::time::Duration>,
    ) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .try_publish(topic, QoS::AtLeastOnce, false, message.payload.to_vec())
                .map_err(error),
            Client::V5(c) => {
                let mut user_properties: Vec<(String, String)> = message
                    .headers
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.to_vec()).ok()?)))
                    .collect();
                if let Some(key) = message
                    .key
                    .as_ref()
                    .and_then(|k| std::str::from_utf8(k).ok())
                {
                    user_properties.push((KEY_PROPERTY.to_owned(), key.to_owned()));
                }
                let properties = p5::PublishProperties {
                    content_type: message.content_type.clone(),
                    user_properties,
                    message_expiry_interval: expiry
                        .map(|e| e.as_secs().clamp(1, u64::from(u32::MAX)) as u32),
                    ..Default::default()
                };
                c.try_publish_with_properties(
                    topic,
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    false,
                    message.payload.clone(),
                    properties,
                )
                .map_err(error)
            }
        }
    }

    pub(super) fn subscribe(&self, filter: &str) -> Result<(), String> {
        match self {
            Client::V4(c) => c.try_subscribe(filter, QoS::AtLeastOnce).map_err(error),
            Client::V5(c) => c
                .try_subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
                .map_err(error),
        }
    }

    pub(super) fn unsubscribe(&self, filter: &str) -> Result<(), String> {
        match self {
            Client::V4(c) => c.try_unsubscribe(filter).map_err(error),
            Client::V5(c) => c.try_unsubscribe(filter).map_err(error),
        }
    }

    /// Acknowledges `message` (manual acknowledgements).
    pub(super) fn ack(&self, message: &Incoming) -> Result<(), String> {
        match (self, &message.raw) {
            (Client::V4(c), Raw::V4(p)) => c.try_ack(p).map_err(error),
            (Client::V5(c), Raw::V5(p)) => c.try_ack(p).map_err(error),
            _ => Err("a message of another protocol version".to_owned()),
        }
    }

    pub(super) fn disconnect(&self) -> Result<(), String> {
        match self {
            Client::V4(c) => c.try_disconnect().map_err(error),
            Client::V5(c) => c.try_disconnect().map_err(error),
        }
    }
}

impl Events {
    /// The next event; an error ends the connection.
    pub(super) async fn poll(&mut self) -> Result<Ev, String> {
        match self {
            Events::V4(events) => {
                use rumqttc::{ConnectReturnCode, Event, Packet, SubscribeReasonCode};
                Ok(match events.poll().await.map_err(error)? {
                    Event::Incoming(Packet::ConnAck(ack)) => Ev::ConnAck {
                        result: if ack.code == ConnectReturnCode::Success {
                            Ok(())
                        } else {
                            Err(format!("connection refused: {:?}", ack.code))
                        },
                        session_present: ack.session_present,
                    },
                    Event::Incoming(Packet::SubAck(ack)) => Ev::SubAck {
                        pkid: ack.pkid,
                        result: if ack
                            .return_codes
                            .iter()
                            .any(|c| matches!(c, SubscribeReasonCode::Failure))
                        {
                            Err("the broker refused the subscription (not authorized?)".to_owned())
                        } else {
                            Ok(())
                        },
                    },
                    Event::Incoming(Packet::PubAck(ack)) => Ev::PubAck {
                        pkid: ack.pkid,
                        result: Ok(()),
                    },
                    Event::Incoming(Packet::Publish(p)) => Ev::Publish(Box::new(Incoming {
                        topic: p.topic.clone(),
                        payload: p.payload.clone(),
                        content_type: None,
                        key: None,
                        headers: Vec::new(),
                        retain: p.retain,
                        raw: Raw::V4(p),
                    })),
                    Event::Incoming(_) => Ev::Other,
                    Event::Outgoing(o) => Ev::Out(o),
                })
            }
            Events::V5(events) => {
                use p5::{ConnectReturnCode, Packet, PubAckReason, SubscribeReasonCode};
                use rumqttc::v5::Event;
                Ok(match events.poll().await.map_err(error)? {
                    Event::Incoming(Packet::ConnAck(ack)) => Ev::ConnAck {
                        result: if ack.code == ConnectReturnCode::Success {
                            Ok(())
                        } else {
                            Err(format!("connection refused: {:?}", ack.code))
                        },
                        session_present: ack.session_present,
                    },
                    Event::Incoming(Packet::SubAck(ack)) => Ev::SubAck {
                        pkid: ack.pkid,
                        result: match ack
                            .return_codes
                            .iter()
                            .find(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                        {
                            None => Ok(()),
                            Some(code) => {
                                Err(format!("the broker refused the subscription: {code:?}"))
                            }
                        },
                    },
                    Event::Incoming(Packet::PubAck(ack)) => Ev::PubAck {
                        pkid: ack.pkid,
                        result: match ack.reason {
                            PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Ok(()),
                            other => Err(format!("the broker refused the publish: {other:?}")),
                        },
                    },
                    Event::Incoming(Packet::Publish(p)) => Ev::Publish(Box::new(incoming_v5(p))),
                    Event::Incoming(_) => Ev::Other,
                    Event::Outgoing(o) => Ev::Out(o),
                })
            }
        }
    }
}

fn incoming_v5(p: p5::Publish) -> Incoming {
    let mut content_type = None;
    let mut key = None;
    let mut headers = Vec::new();
    if let Some(props) = &p.properties {
        content_type = props.content_type.clone();
        for (name, value) in &props.user_properties {
            if name == KEY_PROPERTY && key.is_none() {
                key = Some(Bytes::from(value.clone()));
            } else {
                headers.push((name.clone(), Bytes::from(value.clone())));
            }
        }
    }
    Incoming {
        topic: String::from_utf8_lossy(&p.topic).into_owned(),
        payload: p.payload.clone(),
        content_type,
        key,
        headers,
        retain: p.retain,
        raw: Raw::V5(p),
    }
}
