//! Gateway topic names → broker topic names: a prefix (`eventgate.` on a shared Kafka) and/or
//! explicit renames, applied around any driver. Clients, cursors and documents only ever see
//! gateway names; errors name the gateway topic.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{
    BrokerDriver, BrokerError, BrokerResult, OutgoingMessage, PartitionConsumer, Position, StartAt,
};

/// How gateway topic names become broker topic names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicMapping {
    /// Put before every name not in `renames`.
    pub prefix: String,
    /// Gateway name → broker name, taken as is (no prefix).
    pub renames: BTreeMap<String, String>,
}

impl TopicMapping {
    /// Whether this mapping changes nothing.
    pub fn is_identity(&self) -> bool {
        self.prefix.is_empty() && self.renames.iter().all(|(g, b)| g == b)
    }

    /// The broker's name for gateway topic `topic`.
    pub fn broker_name(&self, topic: &str) -> String {
        match self.renames.get(topic) {
            Some(name) => name.clone(),
            None => format!("{}{topic}", self.prefix),
        }
    }
}

/// A driver whose topic names are mapped.
#[derive(Debug)]
pub struct MappedBroker {
    inner: Arc<dyn BrokerDriver>,
    mapping: TopicMapping,
}

impl MappedBroker {
    /// `inner` with `mapping` applied; `inner` itself when the mapping changes nothing.
    pub fn wrap(inner: Arc<dyn BrokerDriver>, mapping: TopicMapping) -> Arc<dyn BrokerDriver> {
        if mapping.is_identity() {
            inner
        } else {
            Arc::new(Self { inner, mapping })
        }
    }

    /// Errors name the gateway topic, not the broker's (also inside a broker's own reason).
    fn rename<'t>(&self, topic: &'t str) -> impl FnOnce(BrokerError) -> BrokerError + 't {
        let broker_name = self.mapping.broker_name(topic);
        move |e| match e {
            BrokerError::InvalidTopic { reason, .. } => BrokerError::InvalidTopic {
                topic: topic.to_owned(),
                reason,
            },
            BrokerError::Unavailable { reason } if broker_name != topic => {
                BrokerError::Unavailable {
                    reason: reason.replace(&broker_name, topic),
                }
            }
            BrokerError::TopicNotFound { .. } => BrokerError::TopicNotFound {
                topic: topic.to_owned(),
            },
            BrokerError::PartitionNotFound { partition, .. } => BrokerError::PartitionNotFound {
                topic: topic.to_owned(),
                partition,
            },
            other => other,
        }
    }
}

impl BrokerDriver for MappedBroker {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn ping(&self) -> BoxFuture<'_, BrokerResult<()>> {
        self.inner.ping()
    }

    fn topic_exists<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, BrokerResult<bool>> {
        Box::pin(async move {
            let name = self.mapping.broker_name(topic);
            self.inner
                .topic_exists(&name)
                .await
                .map_err(self.rename(topic))
        })
    }

    fn ensure_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, BrokerResult<()>> {
        Box::pin(async move {
            let name = self.mapping.broker_name(topic);
            self.inner
                .ensure_topic(&name)
                .await
                .map_err(self.rename(topic))
        })
    }

    fn partitions<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, BrokerResult<u32>> {
        Box::pin(async move {
            let name = self.mapping.broker_name(topic);
            self.inner
                .partitions(&name)
                .await
                .map_err(self.rename(topic))
        })
    }

    fn latest_offsets<'a>(
        &'a self,
        topic: &'a str,
    ) -> BoxFuture<'a, BrokerResult<Vec<(u32, u64)>>> {
        Box::pin(async move {
            let name = self.mapping.broker_name(topic);
            self.inner
                .latest_offsets(&name)
                .await
                .map_err(self.rename(topic))
        })
    }

    fn publish<'a>(
        &'a self,
        topic: &'a str,
        message: OutgoingMessage,
    ) -> BoxFuture<'a, BrokerResult<Option<Position>>> {
        Box::pin(async move {
            let name = self.mapping.broker_name(topic);
            self.inner
                .publish(&name, message)
                .await
                .map_err(self.rename(topic))
        })
    }

    fn consumer<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        start: StartAt,
    ) -> BoxFuture<'a, BrokerResult<Box<dyn PartitionConsumer>>> {
        Box::pin(async move {
            let name = self.mapping.broker_name(topic);
            self.inner
                .consumer(&name, partition, start)
                .await
                .map_err(self.rename(topic))
        })
    }

    fn offsets_global(&self, topic: &str) -> bool {
        self.inner.offsets_global(&self.mapping.broker_name(topic))
    }

    fn open_session<'a>(
        &'a self,
        subscription: &'a str,
        topic: &'a str,
    ) -> BoxFuture<'a, BrokerResult<()>> {
        Box::pin(async move {
            let name = self.mapping.broker_name(topic);
            self.inner
                .open_session(subscription, &name)
                .await
                .map_err(self.rename(topic))
        })
    }

    fn close_session<'a>(&'a self, subscription: &'a str) -> BoxFuture<'a, BrokerResult<()>> {
        self.inner.close_session(subscription)
    }

    fn session_consumer<'a>(
        &'a self,
        subscription: &'a str,
        topic: &'a str,
        partition: u32,
        start: StartAt,
    ) -> BoxFuture<'a, BrokerResult<Box<dyn PartitionConsumer>>> {
        Box::pin(async move {
            let name = self.mapping.broker_name(topic);
            self.inner
                .session_consumer(subscription, &name, partition, start)
                .await
                .map_err(self.rename(topic))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::embedded::{EmbeddedBroker, EmbeddedConfig};

    #[tokio::test]
    async fn names_are_mapped_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn BrokerDriver> =
            EmbeddedBroker::open(EmbeddedConfig::new(dir.path())).unwrap();
        let mapping = TopicMapping {
            prefix: "eg.".into(),
            renames: BTreeMap::from([("orders".to_owned(), "prod.orders.v1".to_owned())]),
        };
        let broker = MappedBroker::wrap(inner.clone(), mapping);
        broker.ensure_topic("orders").await.unwrap();
        broker.ensure_topic("audit").await.unwrap();
        assert!(inner.topic_exists("prod.orders.v1").await.unwrap());
        assert!(inner.topic_exists("eg.audit").await.unwrap());
        assert!(!inner.topic_exists("orders").await.unwrap());
        broker
            .publish(
                "orders",
                OutgoingMessage {
                    payload: "x".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let mut c = inner
            .consumer("prod.orders.v1", 0, StartAt::Earliest)
            .await
            .unwrap();
        let got = c
            .next_batch(10, std::time::Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(got[0].payload, "x");
        // Errors name the gateway's topic.
        match broker.latest_offsets("missing").await {
            Err(BrokerError::TopicNotFound { topic }) => assert_eq!(topic, "missing"),
            other => panic!("{other:?}"),
        }
        match broker.ensure_topic("bad topic").await {
            Err(e @ BrokerError::InvalidTopic { .. }) => {
                assert!(!e.to_string().contains("eg."), "{e}")
            }
            other => panic!("{other:?}"),
        }
        assert!(TopicMapping::default().is_identity());
    }
}
