#!/usr/bin/env bash
# Tests of the browser client: protocol.js against the shared vectors, gesture.js (translucent pen
# pieces), client.js, then the page in headless Chromium against the real broadcast service
# (BS_BIN, default target/debug/broadcast-service, built beforehand). Exit code: the tests' result.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
if [ ! -d node_modules/playwright-core ]; then
  npm ci --prefer-offline --no-audit --no-fund
fi
export BS_BIN="${BS_BIN:-$here/../target/debug/broadcast-service}"
exec node --test vectors.test.mjs gesture.test.mjs client.test.mjs e2e.test.mjs
