//! Default content types by gateway topic, applied around the whole broker (above the name
//! mapping and the routing): a message read without a content type of its own (another Kafka
//! producer's record with no `content-type` header) gets its topic's default, which the node
//! resolves as `topics.content_types` > the content type the topic's API declares for its
//! messages (AsyncAPI `contentType` / `defaultContentType`) > the topic's broker's
//! `content_type`. A message's own content type always wins. Looked up once per batch read, so
//! an API imported or changed later applies to what is read from then on.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{
    BrokerDriver, BrokerResult, Message, OutgoingMessage, PartitionConsumer, Position, StartAt,
};

/// Gateway topic → the content type of its messages that carry none.
pub type DefaultContentType = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// A driver whose readers fill in default content types.
pub struct TypedBroker {
    inner: Arc<dyn BrokerDriver>,
    default_of: DefaultContentType,
}

impl std::fmt::Debug for TypedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedBroker")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl TypedBroker {
    /// `inner`, its readers' messages given `default_of(topic)` where they carry no type.
    pub fn wrap(
        inner: Arc<dyn BrokerDriver>,
        default_of: DefaultContentType,
    ) -> Arc<dyn BrokerDriver> {
        Arc::new(Self { inner, default_of })
    }

    fn typed(
        &self,
        topic: &str,
        consumer: BrokerResult<Box<dyn PartitionConsumer>>,
    ) -> BrokerResult<Box<dyn PartitionConsumer>> {
        Ok(Box::new(TypedConsumer {
            inner: consumer?,
            topic: topic.to_owned(),
            default_of: self.default_of.clone(),
        }))
    }
}

impl BrokerDriver for TypedBroker {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn ping(&self) -> BoxFuture<'_, BrokerResult<()>> {
        self.inner.ping()
    }

    fn topic_exists<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, BrokerResult<bool>> {
        self.inner.topic_exists(topic)
    }

    fn ensure_topic<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, BrokerResult<()>> {
        self.inner.ensure_topic(topic)
    }

    fn partitions<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, BrokerResult<u32>> {
        self.inner.partitions(topic)
    }

    fn latest_offsets<'a>(
        &'a self,
        topic: &'a str,
    ) -> BoxFuture<'a, BrokerResult<Vec<(u32, u64)>>> {
        self.inner.latest_offsets(topic)
    }

    fn publish<'a>(
        &'a self,
        topic: &'a str,
        message: OutgoingMessage,
    ) -> BoxFuture<'a, BrokerResult<Option<Position>>> {
        self.inner.publish(topic, message)
    }

    fn consumer<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        start: StartAt,
    ) -> BoxFuture<'a, BrokerResult<Box<dyn PartitionConsumer>>> {
        Box::pin(async move {
            let consumer = self.inner.consumer(topic, partition, start).await;
            self.typed(topic, consumer)
        })
    }

    fn offsets_global(&self, topic: &str) -> bool {
        self.inner.offsets_global(topic)
    }

    fn open_session<'a>(
        &'a self,
        subscription: &'a str,
        topic: &'a str,
    ) -> BoxFuture<'a, BrokerResult<()>> {
        self.inner.open_session(subscription, topic)
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
            let consumer = self
                .inner
                .session_consumer(subscription, topic, partition, start)
                .await;
            self.typed(topic, consumer)
        })
    }
}

struct TypedConsumer {
    inner: Box<dyn PartitionConsumer>,
    topic: String,
    default_of: DefaultContentType,
}

impl std::fmt::Debug for TypedConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedConsumer")
            .field("inner", &self.inner)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl PartitionConsumer for TypedConsumer {
    fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'_, BrokerResult<Vec<Message>>> {
        Box::pin(async move {
            let mut messages = self.inner.next_batch(max, wait).await?;
            if messages.iter().any(|m| m.content_type.is_none()) {
                let default = (self.default_of)(&self.topic);
                for m in messages.iter_mut().filter(|m| m.content_type.is_none()) {
                    m.content_type.clone_from(&default);
                }
            }
            Ok(messages)
        })
    }

    fn position(&self) -> u64 {
        self.inner.position()
    }

    fn commit(&mut self, next: u64) {
        self.inner.commit(next)
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        self.inner.close()
    }

    fn skipped_from(&self, requested: u64) -> Option<u64> {
        self.inner.skipped_from(requested)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::embedded::{EmbeddedBroker, EmbeddedConfig};

    #[tokio::test]
    async fn a_message_without_a_type_gets_its_topics_default_and_one_with_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn BrokerDriver> =
            EmbeddedBroker::open(EmbeddedConfig::new(dir.path())).unwrap();
        let broker = TypedBroker::wrap(
            inner,
            Arc::new(|topic: &str| (topic == "feed").then(|| "application/json".to_owned())),
        );
        for topic in ["feed", "other"] {
            broker.ensure_topic(topic).await.unwrap();
            for content_type in [None, Some("text/csv".to_owned())] {
                broker
                    .publish(
                        topic,
                        OutgoingMessage {
                            payload: "x".into(),
                            content_type,
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
            }
        }
        let read = |topic: &'static str| {
            let broker = broker.clone();
            async move {
                let mut c = broker.consumer(topic, 0, StartAt::Earliest).await.unwrap();
                c.next_batch(10, Duration::from_secs(1))
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|m| m.content_type)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            read("feed").await,
            [
                Some("application/json".to_owned()),
                Some("text/csv".to_owned())
            ]
        );
        assert_eq!(read("other").await, [None, Some("text/csv".to_owned())]);
    }
}
