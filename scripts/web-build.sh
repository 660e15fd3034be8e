#!/usr/bin/env bash
# Builds the browser demo: the wasm32 target, wasm-bindgen-cli at exactly the wasm-bindgen
# version in Cargo.lock (from crates.io), the page's wasm in the `web` profile, and the JS glue
# in web/pkg/. Also installs the browser test's playwright-core (web/node_modules).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  echo "web-build: adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if [ -z "$want" ]; then
  echo "web-build: no wasm-bindgen in Cargo.lock" >&2
  exit 1
fi
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$want" ]; then
  echo "web-build: installing wasm-bindgen-cli $want (was: ${have:-none}); a few minutes once"
  cargo install wasm-bindgen-cli --version "$want" --force
fi
cargo build -p condenser-web --target wasm32-unknown-unknown --profile web
rm -rf web/pkg.tmp
wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section \
  --out-dir web/pkg.tmp \
  "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/web/condenser_web.wasm"
# what a browser downloads: web/serve.mjs sends this gzip-encoded copy to browsers accepting it
gzip -6 -k -f web/pkg.tmp/condenser_web_bg.wasm
rm -rf web/pkg
mv web/pkg.tmp web/pkg
size=$(stat -c %s web/pkg/condenser_web_bg.wasm)
gz=$(stat -c %s web/pkg/condenser_web_bg.wasm.gz)
echo "web-build: web/pkg ready (condenser_web_bg.wasm: $((size / 1024)) KiB, $((gz / 1024)) KiB gzip-encoded)"

if [ ! -d web/node_modules/playwright-core ]; then
  (cd web && npm ci --no-audit --no-fund --silent)
fi
