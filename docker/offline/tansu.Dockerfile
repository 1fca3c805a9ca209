# A Kafka-protocol broker (tansu, from crates.io) that reads the few KAFKA_* variables the
# compose file gives apache/kafka, so the same compose file runs on it.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY tansu /usr/local/bin/tansu
COPY tansu-entrypoint.sh /usr/local/bin/tansu-entrypoint.sh
EXPOSE 9092
ENTRYPOINT ["/usr/local/bin/tansu-entrypoint.sh"]
