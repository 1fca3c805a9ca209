#!/usr/bin/env bash
# Builds, without a container registry, the images docker/docker-compose.yml and
# docker/Dockerfile start from, under the tags they name:
#
#   debian:bookworm-slim     a Debian rootfs made by debootstrap --variant=minbase, imported
#   rust:<x.y>-bookworm      that + the C toolchain + this machine's Rust toolchain
#   eclipse-mosquitto:2      that + Debian's mosquitto
#   haproxy:2.6              that + Debian's haproxy (2.6 in bookworm)
#   eventgate/tansu:0.6.0    that + tansu (a Kafka-protocol broker from crates.io), standing in
#                            for apache/kafka, which cannot be had here: KAFKA_IMAGE selects it
#
# Images that exist are kept (--rebuild makes them again). Needs root (debootstrap), docker,
# and for the broker image a tansu binary (EVENTGATE_TANSU, or the one .ci/run caches, or
# `cargo install tansu --version 0.6.0 --locked --features dynostore`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
rebuild=false
[ "${1:-}" = "--rebuild" ] && rebuild=true

work="${EVENTGATE_IMAGE_WORK:-${HOME}/.cache/eventgate-images}"
mkdir -p "$work"

have() { docker image inspect "$1" >/dev/null 2>&1 && ! $rebuild; }
say() { echo "== $*" >&2; }

# The Debian mirror this machine's apt uses.
mirror="$( (grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?$' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true) \
  | awk '{print $2}' | head -n1)"
mirror="${mirror:-http://deb.debian.org/debian}"

if ! have debian:bookworm-slim; then
  command -v debootstrap >/dev/null || { say "installing debootstrap"; apt-get install -y -qq debootstrap >/dev/null; }
  rootfs="$work/rootfs"
  rm -rf "$rootfs"
  say "debootstrap bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import \
    --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - debian:bookworm-slim >/dev/null
  rm -rf "$rootfs"
  say "debian:bookworm-slim ready"
fi

rust_version="$(rustc --version | awk '{print $2}' | cut -d. -f1,2)"
rust_tag="rust:${rust_version}-bookworm"
if ! have "$rust_tag"; then
  ctx="$work/rust-context"
  rm -rf "$ctx" && mkdir -p "$ctx"
  sysroot="$(rustc --print sysroot)"
  say "copying the Rust toolchain ($sysroot) into $rust_tag"
  tar -C "$sysroot" --exclude=./share/doc --exclude=./lib/rustlib/src --exclude=./lib/rustlib/rustc-src \
    -c . | (mkdir -p "$ctx/toolchain" && tar -C "$ctx/toolchain" -x)
  # This machine's own CA certificates (an egress proxy's, say): cargo inside the build must
  # trust what the machine trusts to reach crates.io.
  mkdir -p "$ctx/extra-ca" && touch "$ctx/extra-ca/.keep"
  cp /usr/local/share/ca-certificates/*.crt "$ctx/extra-ca/" 2>/dev/null || true
  cp "$here/rust.Dockerfile" "$ctx/Dockerfile"
  docker build -q -t "$rust_tag" "$ctx" >/dev/null
  rm -rf "$ctx"
  say "$rust_tag ready"
fi

if ! have eclipse-mosquitto:2; then
  docker build -q -t eclipse-mosquitto:2 -f "$here/mosquitto.Dockerfile" "$here" >/dev/null
  say "eclipse-mosquitto:2 ready"
fi

if ! have haproxy:2.6; then
  docker build -q -t haproxy:2.6 -f "$here/haproxy.Dockerfile" "$here" >/dev/null
  say "haproxy:2.6 ready"
fi

if ! have eventgate/tansu:0.6.0; then
  tansu="${EVENTGATE_TANSU:-${HOME}/.cache/eventgate-ci/tansu/bin/tansu}"
  [ -x "$tansu" ] || tansu="$(command -v tansu || true)"
  if [ -z "$tansu" ] || [ ! -x "$tansu" ]; then
    echo "no tansu binary for the Kafka stand-in: set EVENTGATE_TANSU or run" >&2
    echo "  cargo install tansu --version 0.6.0 --locked --features dynostore --root ~/.cache/eventgate-ci/tansu" >&2
    exit 1
  fi
  ctx="$work/tansu-context"
  rm -rf "$ctx" && mkdir -p "$ctx"
  cp "$tansu" "$ctx/tansu"
  cp "$here/tansu-entrypoint.sh" "$ctx/"
  cp "$here/tansu.Dockerfile" "$ctx/Dockerfile"
  docker build -q -t eventgate/tansu:0.6.0 "$ctx" >/dev/null
  rm -rf "$ctx"
  say "eventgate/tansu:0.6.0 ready"
fi
echo "$rust_tag"
