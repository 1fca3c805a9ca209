#!/bin/sh
# tansu in the place of apache/kafka: the advertised listener comes from the variable the
# compose file gives Kafka (KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://kafka:9092). tansu 0.6 built
# with dynostore keeps messages in memory: they last as long as the container.
set -eu
advertised="${KAFKA_ADVERTISED_LISTENERS:-PLAINTEXT://localhost:9092}"
advertised="${advertised%%,*}"
hostport="${advertised#*://}"
exec /usr/local/bin/tansu broker \
  --listener-url "tcp://0.0.0.0:${hostport##*:}" \
  --advertised-listener-url "tcp://${hostport}" \
  --storage-engine memory://tansu/ \
  "$@"
