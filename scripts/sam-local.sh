#!/usr/bin/env bash
# The `sam local` flow as a user types it, in one place: `make sam-local` runs `up`,
# `make sam-local-test` (scripts/sam_local_test.py) runs the same commands, and docs/testing.md
# ("Local testing") shows the lines `commands` prints (a test compares them).
#
#   scripts/sam-local.sh up                      build, start everything, print a curl; Ctrl-C stops
#   scripts/sam-local.sh build                   sam build for this machine's architecture
#   scripts/sam-local.sh services                moto + destination printer + queue pollers
#   scripts/sam-local.sh start-api|start-lambda  SAM's local API Gateway (:3000) / Lambda API (:3001)
#   scripts/sam-local.sh invoke FUNCTION EVENT   one `sam local invoke`
#   scripts/sam-local.sh commands [linux|desktop] the exact command lines, for docs/testing.md
#
# SAM_INVOKE_IMAGE: a Lambda base image to use instead of pulling public.ecr.aws/lambda/provided
# (machines without internet; `make sam-local-test` builds a stand-in). Unset on a normal machine.
# DOCKER_DESKTOP=1: macOS/Windows Docker Desktop, where host.docker.internal resolves by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

case "$(uname -m)" in aarch64 | arm64) ARCH=arm64 ;; *) ARCH=x86_64 ;; esac
ARCH=${SAM_ARCH:-$ARCH}
PARAMS=(--parameter-overrides "Architecture=$ARCH")
# The feeder exists only when ClayWebhookUrls is set (the template's FeederEnabled); locally it
# points at the destination printer, which plays Clay.
FEEDER_PARAMS=(--parameter-overrides "Architecture=$ARCH ClayWebhookUrls=http://host.docker.internal:9000/v3/sources/webhook/pull-in-data-from-a-webhook-1")
HOST=(--add-host host.docker.internal:host-gateway)
[ "${DOCKER_DESKTOP:-}" = 1 ] && HOST=()
IMAGE=()
[ -n "${SAM_INVOKE_IMAGE:-}" ] && IMAGE=(--invoke-image "$SAM_INVOKE_IMAGE" --skip-pull-image)
# Each command is built once, as an argument list: run as is, or shown by `commands`.
argv_build() { ARGV=(sam build "${PARAMS[@]}"); }
argv_services() { ARGV=(cargo run --quiet --bin clayhook -- sam-local --lambda-endpoint http://127.0.0.1:3001); }
argv_start_lambda() { ARGV=(sam local start-lambda --port 3001 --env-vars events/env.json "${FEEDER_PARAMS[@]}" "${HOST[@]}" "${IMAGE[@]}"); }
argv_start_api() { ARGV=(sam local start-api --port 3000 --env-vars events/env.json "${PARAMS[@]}" "${HOST[@]}" "${IMAGE[@]}"); }
argv_invoke() {
  local params=("${PARAMS[@]}")
  [ "$1" = FeederFunction ] && params=("${FEEDER_PARAMS[@]}")
  ARGV=(sam local invoke "$1" -e "$2" --env-vars events/env.json "${params[@]}" "${HOST[@]}" "${IMAGE[@]}")
}

build() { argv_build; "${ARGV[@]}"; }
services() { argv_services; "${ARGV[@]}"; }
start_api() { argv_start_api; "${ARGV[@]}"; }
start_lambda() { argv_start_lambda; "${ARGV[@]}"; }
invoke() { argv_invoke "$1" "$2"; "${ARGV[@]}"; }

show() {
  local out=() a
  for a in "${ARGV[@]}"; do
    if [[ $a == *' '* ]]; then out+=("\"$a\""); else out+=("$a"); fi
  done
  echo "${out[*]}$1"
}

commands() {
  IMAGE=()
  HOST=(--add-host host.docker.internal:host-gateway)
  [ "${1:-linux}" = desktop ] && HOST=()
  argv_build; show ""
  argv_services; show " &"
  argv_start_lambda; show " &"
  argv_start_api; show ""
  argv_invoke IngestFunction events/ingest-static-token.json; show ""
  argv_invoke RouterFunction events/router-sqs-batch.json; show ""
  argv_invoke FeederFunction events/feeder-sqs-batch.json; show ""
}

# Stops background jobs the way Ctrl-C stops a foreground one (SAM then removes its containers),
# then for good.
stop_jobs() {
  local pid
  for pid in "$@"; do kill -INT -- "-$pid" 2>/dev/null || true; done
  for _ in $(seq 1 20); do
    local alive=0
    for pid in "$@"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.5
  done
  for pid in "$@"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
}

up() {
  build
  cargo build --bin clayhook
  # Job control: each background job in its own process group, taking SIGINT as a foreground
  # one would (without it, background jobs ignore SIGINT).
  set -m
  local pids=()
  trap 'stop_jobs "${pids[@]}"; echo stopped' EXIT
  trap 'exit 130' INT TERM
  services & pids+=($!)
  start_lambda & pids+=($!)
  start_api & pids+=($!)
  for _ in $(seq 1 120); do
    curl -s -o /dev/null http://127.0.0.1:3000/ && break
    sleep 1
  done
  cat <<EOF

sam local is up: API Gateway on :3000 (IngestFunction), Lambda on :3001 (the queues feed
RouterFunction and FeederFunction), moto on :5000, destinations printed here (:9000).

curl -i -X POST http://127.0.0.1:3000/api/clay/enriched \\
  -H 'Content-Type: application/json' \\
  -H 'X-Clay-Signature: local-dev-token-change-me' \\
  -d '{"Work Email":"jane@example.com","First Name":"Jane","Company":"Acme","ICP Score":"92"}'

Ctrl-C stops everything.
EOF
  wait
}

cmd=${1:-up}
shift || true
case "$cmd" in
  up) up ;;
  build) build ;;
  services) services "$@" ;;
  start-api) start_api ;;
  start-lambda) start_lambda ;;
  invoke) invoke "$@" ;;
  commands) commands "$@" ;;
  *) echo "unknown command: $cmd" >&2; exit 2 ;;
esac
