#!/usr/bin/env bash
# The docker-compose cluster on a machine without a container registry: builds the base images
# locally (offline/build-base-images.sh), then runs the very same docker-compose.yml with the
# Kafka service on tansu (a Kafka-protocol broker built from crates.io).
#
#   docker/local.sh up        build what is missing, start, wait for three voters
#   docker/local.sh status    `eventgate cluster status` inside node1
#   docker/local.sh scale5    add node4 and node5 (voters)
#   docker/local.sh down      stop and remove the containers (volumes kept)
#   docker/local.sh purge     ... and the volumes (all data)
#   docker/local.sh compose … any docker-compose command with the same settings
#
# COMPOSE_PROJECT_NAME and EVENTGATE_PORT select another project and port (the container chaos
# tests use their own).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-eventgate}"
export KAFKA_IMAGE="${KAFKA_IMAGE:-eventgate/tansu:0.6.0}"

compose() {
  if command -v docker-compose >/dev/null 2>&1; then
    docker-compose -f "$here/docker-compose.yml" "$@"
  else
    docker compose -f "$here/docker-compose.yml" "$@"
  fi
}

# An admin token of this installation, made once (docker/.env is not committed).
if [ -z "${EVENTGATE_ADMIN_TOKEN:-}" ]; then
  if [ ! -f "$here/.env" ] || ! grep -q '^EVENTGATE_ADMIN_TOKEN=' "$here/.env"; then
    echo "EVENTGATE_ADMIN_TOKEN=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')" >>"$here/.env"
    echo "== made an admin token in docker/.env" >&2
  fi
  EVENTGATE_ADMIN_TOKEN="$(grep '^EVENTGATE_ADMIN_TOKEN=' "$here/.env" | tail -n1 | cut -d= -f2-)"
  export EVENTGATE_ADMIN_TOKEN
fi

wait_voters() {
  local want="$1" deadline=$((SECONDS + ${EVENTGATE_UP_TIMEOUT:-180}))
  until compose exec -T node1 eventgate cluster status 2>/dev/null | grep -q "voters: *$want\b"; do
    if ((SECONDS > deadline)); then
      echo "the cluster did not reach $want voters in time; last status:" >&2
      compose exec -T node1 eventgate cluster status >&2 || true
      compose logs --tail=30 >&2 || true
      exit 1
    fi
    sleep 1
  done
}

case "${1:-up}" in
  up)
    rust_tag="$("$here/offline/build-base-images.sh" | tail -n1)"
    export RUST_IMAGE="${RUST_IMAGE:-$rust_tag}"
    compose build certs
    compose up -d
    wait_voters 3
    compose exec -T node1 eventgate cluster status
    echo "eventgate is up behind the load balancer: http://127.0.0.1:${EVENTGATE_PORT:-8080}"
    ;;
  status)
    compose exec -T node1 eventgate cluster status
    ;;
  scale5)
    compose --profile five up -d node4 node5
    wait_voters 5
    compose exec -T node1 eventgate cluster status
    ;;
  down)
    compose --profile five down
    ;;
  purge)
    compose --profile five down -v
    ;;
  compose)
    shift
    compose "$@"
    ;;
  *)
    sed -n '2,15p' "$0" >&2
    exit 2
    ;;
esac
