//! Several brokers behind one driver: each gateway topic lives on one of them (`[brokers.<name>]`
//! lists its topics), every other topic on the default broker. Each member is already wrapped
//! in its own name mapping.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{BrokerDriver, BrokerResult, OutgoingMessage, PartitionConsumer, Position, StartAt};

/// Routes every call by its gateway topic.
#[derive(Debug)]
pub struct RoutedBroker {
    default: Arc<dyn BrokerDriver>,
    routes: BTreeMap<String, Arc<dyn BrokerDriver>>,
    members: Vec<Arc<dyn BrokerDriver>>,
}

impl RoutedBroker {
    /// `default` serves every topic not in `routes` (gateway topic → broker); `default` alone
    /// when nothing is routed elsewhere.
    pub fn wrap(
        default: Arc<dyn BrokerDriver>,
        routes: BTreeMap<String, Arc<dyn BrokerDriver>>,
    ) -> Arc<dyn BrokerDriver> {
        if routes.is_empty() {
            return default;
        }
        let mut members = vec![default.clone()];
        for broker in routes.values() {
            if !members.iter().any(|m| Arc::ptr_eq(m, broker)) {
                members.push(broker.clone());
            }
        }
        Arc::new(Self {
            default,
            routes,
            members,
        })
    }

    fn of(&self, topic: &str) -> &Arc<dyn BrokerDriver> {
        self.routes.get(topic).unwrap_or(&self.default)
    }
}

impl BrokerDriver for RoutedBroker {
    /// The default broker's name (each member is probed and named on its own).
    fn name(&self) -> &'static str {
        self.default.name()
    }

    fn ping(&self) -> BoxFuture<'_, BrokerResult<()>> {
        Box::pin(async move {
            for member in &self.members {
                member.ping().await?;
            }
            Ok(())
        })
    }

    fn topic_exists<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, BrokerResult<bool>> {
        self.of(topic).topic_exists(topic)
    }

    fn ensure_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, BrokerResult<()>> {
        self.of(topic).ensure_topic(topic)
    }

    fn partitions<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, BrokerResult<u32>> {
        self.of(topic).partitions(topic)
    }

    fn latest_offsets<'a>(
        &'a self,
        topic: &'a str,
    ) -> BoxFuture<'a, BrokerResult<Vec<(u32, u64)>>> {
        self.of(topic).latest_offsets(topic)
    }

    fn publish<'a>(
        &'a self,
        topic: &'a str,
        message: OutgoingMessage,
    ) -> BoxFuture<'a, BrokerResult<Option<Position>>> {
        self.of(topic).publish(topic, message)
    }

    fn consumer<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        start: StartAt,
    ) -> BoxFuture<'a, BrokerResult<Box<dyn PartitionConsumer>>> {
        self.of(topic).consumer(topic, partition, start)
    }

    fn offsets_global(&self, topic: &str) -> bool {
        self.of(topic).offsets_global(topic)
    }

    fn open_session<'a>(
        &'a self,
        subscription: &'a str,
        topic: &'a str,
    ) -> BoxFuture<'a, BrokerResult<()>> {
        self.of(topic).open_session(subscription, topic)
    }

    /// The subscription's topic is not known here: every member forgets it (a no-op on
    /// positional brokers).
    fn close_session<'a>(&'a self, subscription: &'a str) -> BoxFuture<'a, BrokerResult<()>> {
        Box::pin(async move {
            let mut result = Ok(());
            for member in &self.members {
                if let Err(e) = member.close_session(subscription).await {
                    result = Err(e);
                }
            }
            result
        })
    }

    fn session_consumer<'a>(
        &'a self,
        subscription: &'a str,
        topic: &'a str,
        partition: u32,
        start: StartAt,
    ) -> BoxFuture<'a, BrokerResult<Box<dyn PartitionConsumer>>> {
        self.of(topic)
            .session_consumer(subscription, topic, partition, start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::embedded::{EmbeddedBroker, EmbeddedConfig};

    #[tokio::test]
    async fn topics_go_to_their_broker_and_the_rest_to_the_default() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let default: Arc<dyn BrokerDriver> =
            EmbeddedBroker::open(EmbeddedConfig::new(a.path())).unwrap();
        let other: Arc<dyn BrokerDriver> =
            EmbeddedBroker::open(EmbeddedConfig::new(b.path())).unwrap();
        let broker = RoutedBroker::wrap(
            default.clone(),
            BTreeMap::from([("plant".to_owned(), other.clone())]),
        );
        broker.ensure_topic("orders").await.unwrap();
        broker.ensure_topic("plant").await.unwrap();
        assert!(default.topic_exists("orders").await.unwrap());
        assert!(!default.topic_exists("plant").await.unwrap());
        assert!(other.topic_exists("plant").await.unwrap());
        assert!(!other.topic_exists("orders").await.unwrap());
        let message = OutgoingMessage {
            payload: "t".into(),
            ..Default::default()
        };
        broker.publish("plant", message).await.unwrap();
        assert_eq!(other.latest_offsets("plant").await.unwrap(), vec![(0, 1)]);
        assert_eq!(broker.latest_offsets("plant").await.unwrap(), vec![(0, 1)]);
        assert!(broker.ping().await.is_ok());
    }
}
