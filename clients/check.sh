#!/usr/bin/env bash
# Clients generated from the served OpenAPI document, against the real server:
#   1. openapi-python-client generates a Python client; workflow.py runs a seller workflow
#      through it (every step must answer the generated model);
#   2. openapi-typescript generates types; tsc --strict must accept the workflow's real JSON;
#   3. schemathesis fuzzes every operation (--checks all): no server error, no response that
#      contradicts the document.
# Prints step | python | typescript and timings; exits non-zero on any failure.
# Needs python3 (with venv), Node.js and npm; the tools go under target/clients/.
set -euo pipefail
cd "$(dirname "$0")/.."

OPENAPI_PYTHON_CLIENT=0.29.1
SCHEMATHESIS=4.32.5
OPENAPI_TYPESCRIPT=7.13.0
TYPESCRIPT=5.9.3

target=${CARGO_TARGET_DIR:-$PWD/target}
work=$target/clients
bin=$target/debug/convcommerce
clients=$PWD/clients
began=$SECONDS
mark=$SECONDS
timing() {
  printf 'clients/check.sh: %-34s %4d s\n' "$1" $((SECONDS - mark))
  mark=$SECONDS
}

[ -x "$bin" ] || cargo build --bin convcommerce
mkdir -p "$work"

[ -x "$work/venv/bin/pip" ] || python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --disable-pip-version-check \
  "openapi-python-client==$OPENAPI_PYTHON_CLIENT" "schemathesis==$SCHEMATHESIS"
npm install --prefix "$work/node" --no-audit --no-fund --loglevel=error \
  "openapi-typescript@$OPENAPI_TYPESCRIPT" "typescript@$TYPESCRIPT" >/dev/null
timing "tools installed"

# A fresh private database of its own (PostgreSQL runs as `postgres` when we are root).
data=$(mktemp -d "$work/data.XXXXXX")
chmod 755 "$data"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base=http://127.0.0.1:$port
CONVCOMMERCE_DATA_DIR=$data HOST=127.0.0.1 PORT=$port RATE_LIMITS=off \
  "$bin" serve >"$work/server.log" 2>&1 &
server=$!
stop_server() {
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$data"
}
trap stop_server EXIT
for _ in $(seq 1 120); do
  curl -sf "$base/health" >/dev/null && break
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log"; exit 1; }
  sleep 0.5
done
curl -sf "$base/health" >/dev/null || { echo "the server did not start"; cat "$work/server.log"; exit 1; }
demo=$(CONVCOMMERCE_DATA_DIR=$data "$bin" demo)
tenant=$(sed -n 's/^ *TENANT_ID=//p' <<<"$demo")
token=$(sed -n 's/^ *TOKEN=//p' <<<"$demo")
[ -n "$tenant" ] && [ -n "$token" ] || { echo "demo printed no TENANT_ID/TOKEN"; exit 1; }
curl -sf "$base/api/v1/openapi.json" -o "$work/openapi.json"
timing "server started, demo seeded"

status=0
rm -rf "$work/python-client"
"$work/venv/bin/openapi-python-client" generate --path "$work/openapi.json" \
  --output-path "$work/python-client" --meta setup --config "$clients/python-client.yaml" \
  >"$work/python-generate.log" 2>&1 || { cat "$work/python-generate.log"; exit 1; }
if grep -q WARNING "$work/python-generate.log"; then
  cat "$work/python-generate.log"
  status=1
fi
"$work/venv/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps \
  "$work/python-client"
"$work/venv/bin/python" "$clients/workflow.py" "$base" "$tenant" "$token" \
  "$work/capture.json" || status=1
timing "python client generated and run"

mkdir -p "$work/ts"
"$work/node/node_modules/.bin/openapi-typescript" "$work/openapi.json" \
  -o "$work/ts/schema.d.ts" >/dev/null
python3 "$clients/typecheck.py" write "$work/capture.json" "$work/ts/check.ts"
"$work/node/node_modules/.bin/tsc" --strict --noEmit --target es2022 --module esnext \
  --moduleResolution bundler "$work/ts/check.ts" >"$work/ts/tsc.log" 2>&1 || status=1
echo "tsc --strict: $(grep -c 'error TS' "$work/ts/tsc.log" || true) errors"
timing "typescript types checked"
python3 "$clients/typecheck.py" table "$work/capture.json" "$work/ts/check.ts" \
  "$work/ts/tsc.log" || status=1

# Every operation, with the demo owner's token; deletes and state changes are fine here. One
# worker: with two, CPython 3.11's ast (which hypothesis uses to describe filters) can fail
# across threads. Run from the work directory, where schemathesis keeps its cache.
(cd "$work" && "$work/venv/bin/st" --config-file "$clients/schemathesis.toml" --no-color run \
  "$base/api/v1/openapi.json" \
  -H "Authorization: Bearer $token" -H "X-Tenant-ID: $tenant" \
  --checks all --max-examples 40 --workers 1 --seed 1 \
  >"$work/schemathesis.log" 2>&1) || { status=1; sed -n '/FAILURES/,$p' "$work/schemathesis.log"; }
grep -E "^  [0-9]+ generated" "$work/schemathesis.log" | sed 's/^ */schemathesis: /'
timing "schemathesis"

printf 'clients/check.sh: %-34s %4d s\n' "total" $((SECONDS - began))
[ "$status" = 0 ] && echo "clients/check.sh: all checks passed" || echo "clients/check.sh: FAILED"
exit "$status"
