#!/usr/bin/env bash
# Runs schemathesis (PyPI) against a freshly started gateway: no 5xx, every response matches
# GET /openapi.json. Usage: sync/gateway/scripts/schemathesis.sh [path/to/lanepay-gateway]
# Needs python3 with venv; installs schemathesis into a throwaway venv unless `st` is on PATH.
set -euo pipefail

binary="${1:-target/debug/lanepay-gateway}"
work="$(mktemp -d)"
gateway_pid=""
cleanup() {
    if [ -n "$gateway_pid" ]; then kill -TERM "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

if command -v st >/dev/null 2>&1; then
    st=st
else
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install --quiet schemathesis
    st="$work/venv/bin/st"
fi

"$binary" merchant add --data "$work/data" --id M1 --name schemathesis \
    --sign-type HMAC-SHA256 --notify-host 127.0.0.1 >/dev/null
"$binary" serve --data "$work/data" --listen 127.0.0.1:0 --admin-token schemathesis \
    >"$work/stdout" 2>"$work/stderr" &
gateway_pid=$!
for _ in $(seq 1 100); do
    [ -s "$work/stdout" ] && break
    sleep 0.1
done
address="$(head -n 1 "$work/stdout")"
[ -n "$address" ] || { echo "gateway did not start" >&2; cat "$work/stderr" >&2; exit 1; }

"$st" run "http://$address/openapi.json" --checks all --max-examples 100 \
    -H "Authorization: Bearer schemathesis"
