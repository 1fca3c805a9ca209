#!/usr/bin/env bash
# Screenshots of the developer portal's main pages for the docs, made by the browser test that
# walks the portal as a new developer (node/tests/browser.rs): catalog, an API's page (desktop
# and phone width, code filled in for the developer's application), the try-it page with
# messages arrived, and the application's page with its usage against the plan. Needs Debian's
# `chromium`. Run from anywhere: docs/screenshots/make.sh
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
EVENTGATE_PORTAL_SCREENSHOTS="$repo/docs/screenshots" \
  cargo test -q -p eventgate --test browser a_new_developer_walks_the_portal_in_a_real_browser
ls -l "$repo"/docs/screenshots/*.png
