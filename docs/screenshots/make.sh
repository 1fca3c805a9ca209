#!/usr/bin/env bash
# Screenshots of the developer portal's main pages for the docs: starts a development node
# (`target/debug/eventgate`, built first), imports an AsyncAPI document of the tests, publishes
# it with a plan, and renders the catalog and the API's page with headless Chromium
# (Debian's `chromium`) into docs/screenshots/. Run from anywhere: docs/screenshots/make.sh
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
out="$repo/docs/screenshots"
cd "$repo"
cargo build -q -p eventgate
work="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cport="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
./target/debug/eventgate serve --data-dir "$work/data" --http-listen "127.0.0.1:$port" \
  --cluster-listen "127.0.0.1:$cport" >"$work/log" 2>&1 &
node=$!
trap 'kill $node 2>/dev/null; rm -rf "$work"' EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
  curl -sf "$base/readyz" >/dev/null && break
  sleep 0.1
done
curl -sf -X POST --data-binary @node/tests/fixtures/import/lamps-kafka-3.0.yaml \
  "$base/admin/apis/import?topic.brightnessMeasured=lamps.brightness&topic.lampDim=lamps.dim" >/dev/null
curl -sf -X PUT -H 'content-type: application/json' -d '{"state":"published"}' \
  "$base/admin/apis/smart-lamps-kafka-api/lifecycle" >/dev/null
curl -sf -X POST --data-binary @node/tests/fixtures/import/sweet-prod-ws-3.0.yaml "$base/admin/apis/import" >/dev/null
curl -sf -X PUT -H 'content-type: application/json' -d '{"state":"published"}' \
  "$base/admin/apis/sweet-prod-app/lifecycle" >/dev/null
curl -sf -X PUT -H 'content-type: application/json' \
  -d '{"description":"For production use","publish":{"count":100,"per":"1m"},"max_connections":10,"approval_required":true}' \
  "$base/admin/plans/gold" >/dev/null
shot() {
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size="$2" \
    --screenshot="$out/$1" "$3" >/dev/null 2>&1
}
shot portal-catalog.png 1000,700 "$base/portal"
shot portal-api.png 1000,2200 "$base/portal/apis/smart-lamps-kafka-api"
shot portal-api-phone.png 390,1400 "$base/portal/apis/sweet-prod-app"
echo "written: $out/portal-catalog.png portal-api.png portal-api-phone.png"
