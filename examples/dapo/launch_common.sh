#!/usr/bin/env bash
# Shared launch flow of the DAPO scripts (sourced by dapo_trainer_<model>.sh; edit those, not this).
# Run the same script on every node. The master node (MASTER_ADDR is its IP) starts Ray's head,
# waits (bounded) until every node's devices have joined, runs the trainer, then stops its Ray;
# the other nodes join the head and stop their Ray when the head goes away. Every `ray start`
# runs with --block in the background: stopping it (SIGTERM to its pid) stops exactly the Ray
# processes it started, never another cluster's (a bare `ray stop` kills every Ray of the user).
#
# Arguments: [yaml-name] [section.key=value ...] [--max-restarts N] (passed to cli/train_dapo.py)
# Environment (docs/multi_node.md): NNODES, NPUS_PER_NODE, MASTER_ADDR, SOCKET_IFNAME (default:
# the interface of the default route), RAY_PORT (6766), NODE_WAIT_S (600: how long the head waits
# for the nodes and a node for the head), RAY_AUTH_MODE (token | disabled), RAY_AUTH_TOKEN /
# RAY_AUTH_TOKEN_PATH, LOG_DIR (logs/), LAUNCH_DRY_RUN=1 (print the commands, start nothing),
# LAUNCH_DEVICE (npu | cuda | cpu: the device kind declared to Ray; default: detected),
# RAY_START_WAIT_S (300: how long the head's `ray start` may take).
set -euo pipefail

: "${NNODES:?}" "${NPUS_PER_NODE:?}" "${DEFAULT_YAML:?}"
RAY_PORT="${RAY_PORT:-6766}"
NODE_WAIT_S="${NODE_WAIT_S:-600}"
YAML="$DEFAULT_YAML"
if [ $# -gt 0 ] && [[ "$1" != -* && "$1" != *=* ]]; then YAML="$1"; shift; fi
TRAIN_ARGS=("$@")
PROJECT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$PROJECT_DIR"   # Ray must be started from the project directory on every node
ROOT="$PROJECT_DIR"
source "$PROJECT_DIR/examples/python_env.sh"   # sets PYTHON: $PYTHON, a virtualenv, or .venv
fail() { echo "error: $*" >&2; exit 2; }

# this node's interface and IP: SOCKET_IFNAME, else the interface of the default route
if [ -z "${SOCKET_IFNAME:-}" ]; then
  SOCKET_IFNAME=$(ip -4 route show default 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}' || true)
  [ -n "$SOCKET_IFNAME" ] || fail "SOCKET_IFNAME is unset and this node has no default route; set SOCKET_IFNAME to the interface of the cluster network (see 'ip addr')"
  echo "SOCKET_IFNAME=$SOCKET_IFNAME (the default route's interface)"
fi
CURRENT_IP=$(ip -4 addr show "$SOCKET_IFNAME" 2>/dev/null | awk '/inet /{print $2}' | cut -d/ -f1 | head -n1 || true)
[ -n "$CURRENT_IP" ] || fail "no IPv4 address on SOCKET_IFNAME=$SOCKET_IFNAME; set it to this node's interface (see 'ip addr')"
if [ -z "${MASTER_ADDR:-}" ]; then
  [ "$NNODES" -eq 1 ] || fail "set MASTER_ADDR to the first node's IP on every node (NNODES=$NNODES)"
  MASTER_ADDR="$CURRENT_IP"
fi
export SOCKET_IFNAME MASTER_ADDR
ROLE=worker; [ "$CURRENT_IP" = "$MASTER_ADDR" ] && ROLE=head

# one log per node and run: everything this script and the trainer print
LOG_DIR="${LOG_DIR:-$PROJECT_DIR/logs}"
mkdir -p "$LOG_DIR"
RUN_LOG="$LOG_DIR/${YAML##*/}_$(hostname)_${ROLE}_$(date +%Y%m%d_%H%M%S)_$$.log"
RAY_LOG="${RUN_LOG%.log}.ray.log"
exec > >(tee -a "$RUN_LOG") 2> >(tee -a "$RUN_LOG" >&2)
echo "run log: $RUN_LOG"

# many workers, sockets and checkpoint shards: raise the open-files limit to the hard limit
ulimit -n "$(ulimit -Hn)" 2>/dev/null || echo "warning: could not raise ulimit -n (now $(ulimit -n))"

# Ascend toolkit (CANN) environment, when installed
for env_file in /usr/local/Ascend/ascend-toolkit/set_env.sh /usr/local/Ascend/nnal/atb/set_env.sh; do
  # shellcheck disable=SC1090
  [ -f "$env_file" ] && source "$env_file"
done
export HCCL_CONNECT_TIMEOUT="${HCCL_CONNECT_TIMEOUT:-1800}"
export HCCL_EXEC_TIMEOUT="${HCCL_EXEC_TIMEOUT:-3600}"
export HCCL_IF_BASE_PORT="${HCCL_IF_BASE_PORT:-48890}"
export HCCL_SOCKET_IFNAME="$SOCKET_IFNAME"
export GLOO_SOCKET_IFNAME="$SOCKET_IFNAME"
export TP_SOCKET_IFNAME="$SOCKET_IFNAME"
export CUDA_DEVICE_MAX_CONNECTIONS=1
export TOKENIZERS_PARALLELISM=false
# stopping a --block'ed `ray start` drains the node first (30 s by default, for Ray Serve)
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="${RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S:-0}"

# jemalloc: located by the platform layer (no hard-coded path); long runs need it
eval "$("$PYTHON" cli/jemalloc_env.py ${JEMALLOC_OPTIONAL:+--optional})"

# how each node declares its devices to Ray: GPUs are Ray's own --num-gpus (Ray refuses "GPU" in
# --resources); NPUs the custom resource "NPU"; CPU workers the custom "cpu_slot"
DEVICE_KIND="${LAUNCH_DEVICE:-$("$PYTHON" -c "from mindspeed_rl.platform.device import device_type; print(device_type())")}"
case "$DEVICE_KIND" in
  cuda) DEVICE_RESOURCE=GPU ;;
  npu) DEVICE_RESOURCE=NPU ;;
  cpu) DEVICE_RESOURCE=cpu_slot ;;
  *) fail "LAUNCH_DEVICE=$DEVICE_KIND: expected npu, cuda or cpu" ;;
esac
# the flag itself comes from the platform layer, the one place that knows Ray's resource rules
RESOURCE_ARGS=("$("$PYTHON" -m mindspeed_rl.platform.ray_resources --device "$DEVICE_KIND" --count "$NPUS_PER_NODE")") \
  || fail "NPUS_PER_NODE=$NPUS_PER_NODE: expected a device count >= 1"
TOTAL_DEVICES=$((NNODES * NPUS_PER_NODE))

# Ray's token authentication (on by default for a new head): every node needs the head's token,
# from RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names, or ~/.ray/auth_token (Ray's order)
RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
case "$RAY_AUTH_MODE" in
  disabled) echo "warning: Ray token authentication is OFF (RAY_AUTH_MODE=disabled): anyone who reaches $MASTER_ADDR:$RAY_PORT can run code as $(id -un)" ;;
  token) ;;
  *) fail "RAY_AUTH_MODE=$RAY_AUTH_MODE: expected token (the default) or disabled" ;;
esac
export RAY_AUTH_MODE
TOKEN_FILE="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"
COMMON_ARGS=(--node-ip-address "$CURRENT_IP" "${RESOURCE_ARGS[@]}" --disable-usage-stats --block)
HEAD_CMD=("$PYTHON" -m ray.scripts.scripts start --head --port "$RAY_PORT" --include-dashboard=false "${COMMON_ARGS[@]}")
WORKER_CMD=("$PYTHON" -m ray.scripts.scripts start --address="$MASTER_ADDR:$RAY_PORT" "${COMMON_ARGS[@]}")
TRAIN_CMD=("$PYTHON" cli/train_dapo.py --config-name "$YAML" "${TRAIN_ARGS[@]}")
if [ -n "${LAUNCH_DRY_RUN:-}" ]; then
  echo "node $CURRENT_IP ($SOCKET_IFNAME), role $ROLE, $NPUS_PER_NODE x $DEVICE_RESOURCE"
  if [ "$ROLE" = head ]; then
    echo "would run: ${HEAD_CMD[*]}"; echo "would run: ${TRAIN_CMD[*]}"
  else
    echo "would run: ${WORKER_CMD[*]}"
  fi
  exit 0
fi

make_token() {  # the head creates the token file when none is given (owner-only permissions)
  [ -n "${RAY_AUTH_TOKEN:-}" ] || [ -s "$TOKEN_FILE" ] && return 0
  mkdir -p "$(dirname "$TOKEN_FILE")"
  (umask 077; "$PYTHON" -c "from ray._private.authentication.authentication_token_generator import generate_new_authentication_token as g; print(g(), end='')" > "$TOKEN_FILE")
  echo "Ray token authentication: a new token in $TOKEN_FILE; the other nodes need it (RAY_AUTH_TOKEN_PATH on shared storage, or RAY_AUTH_TOKEN)"
}
wait_token() {  # a node waits (bounded) for the head's token file, e.g. on shared storage
  [ -n "${RAY_AUTH_TOKEN:-}" ] && return 0
  local deadline=$((SECONDS + NODE_WAIT_S))
  [ -s "$TOKEN_FILE" ] || echo "waiting up to ${NODE_WAIT_S} s for the head's Ray token in $TOKEN_FILE"
  until [ -s "$TOKEN_FILE" ]; do
    [ $SECONDS -lt $deadline ] || fail "no Ray token in $TOKEN_FILE after ${NODE_WAIT_S} s: give every node the head's token (RAY_AUTH_TOKEN_PATH=<file on shared storage> or RAY_AUTH_TOKEN=<token>), or set RAY_AUTH_MODE=disabled on every node"
    sleep 2
  done
}
[ "$RAY_AUTH_MODE" = token ] && [ -z "${RAY_AUTH_TOKEN:-}" ] && echo "Ray token: $TOKEN_FILE"

RAY_PID=""
descendants() {  # every process below pid $1 (by parent pid, not by name)
  ps -eo pid=,ppid= | awk -v root="$1" '{ kids[$2] = kids[$2] " " $1 }
    END { n = split(kids[root], todo, " "); while (n > 0) { p = todo[n--]; print p;
          m = split(kids[p], more, " "); for (i = 1; i <= m; i++) todo[++n] = more[i] } }'
}
started() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $20}'; }  # start time
stop_ray() {  # this node's Ray only: the processes our `ray start --block` started
  [ -n "$RAY_PID" ] || return 0
  local tree alive
  tree=$(for pid in $(descendants "$RAY_PID"); do t=$(started "$pid"); [ -z "$t" ] || echo "$pid:$t"; done)
  if kill -0 "$RAY_PID" 2>/dev/null; then
    kill -TERM "$RAY_PID" 2>/dev/null || true   # Ray stops the raylet, GCS, agents it started
    for _ in $(seq 60); do kill -0 "$RAY_PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$RAY_PID" 2>/dev/null || true
  fi
  wait "$RAY_PID" 2>/dev/null || true
  # the per-node agents exit a few seconds after their raylet; what is left then is killed
  # (a pid counts only while its start time is the one recorded: never a reused pid)
  for _ in $(seq 20); do
    alive=""
    for entry in $tree; do
      [ "$(started "${entry%:*}")" = "${entry#*:}" ] && alive="$alive ${entry%:*}"
    done
    [ -z "$alive" ] && break; sleep 0.5
  done
  [ -n "$alive" ] && kill -KILL $alive 2>/dev/null
  echo "stopped this node's Ray (pid $RAY_PID${alive:+; killed the leftover$alive})"
  RAY_PID=""
}
trap stop_ray EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_ray() {  # start "${@:2}" in the background; wait up to $1 s until it runs or exits
  local wait_s=$1; shift
  "$@" >> "$RAY_LOG" 2>&1 &
  RAY_PID=$!
  local deadline=$((SECONDS + wait_s))
  while kill -0 "$RAY_PID" 2>/dev/null; do
    grep -q "Ray runtime started" "$RAY_LOG" && return 0
    [ $SECONDS -lt $deadline ] || { stop_ray; echo "ray start did not come up in $wait_s s; see $RAY_LOG" >&2; return 1; }
    sleep 0.5
  done
  wait "$RAY_PID" 2>/dev/null || true
  RAY_PID=""
  return 1
}
port_taken() {
  "$PYTHON" - "$1" "$2" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(0)
sys.exit(1)
PY
}

if [ "$ROLE" = head ]; then
  # the config first: a typo must not wait for the nodes to surface
  if ! "$PYTHON" cli/train_dapo.py --config-name "$YAML" "${TRAIN_ARGS[@]}" --dry-run > /dev/null; then
    fail "the run's config does not validate (above); nothing was started"
  fi
  if port_taken "$CURRENT_IP" "$RAY_PORT"; then
    fail "RAY_PORT=$RAY_PORT is taken on $CURRENT_IP (another Ray cluster or service: see 'ss -ltnp'); set RAY_PORT to a free port on every node"
  fi
  [ "$RAY_AUTH_MODE" = token ] && make_token
  echo "starting Ray's head at $CURRENT_IP:$RAY_PORT ($NPUS_PER_NODE x $DEVICE_RESOURCE)"
  # Ray gives its raylet a fixed 30 s to register (ray/_private/node.py): on an overloaded host
  # that start-up can time out: up to 3 tries
  for attempt in 1 2 3; do
    start_ray "${RAY_START_WAIT_S:-300}" "${HEAD_CMD[@]}" && break
    if [ $attempt -lt 3 ] && grep -q "timed out during startup" <(tail -n 30 "$RAY_LOG"); then
      echo "Ray's head timed out during its start-up (attempt $attempt of 3); retrying"; continue
    fi
    tail -n 20 "$RAY_LOG" >&2
    fail "Ray's head did not start (RAY_PORT=$RAY_PORT on $CURRENT_IP); log: $RAY_LOG"
  done
  # the trainer joins this cluster, and no other, only through RAY_ADDRESS (without it, it would
  # start a local cluster of its own)
  export RAY_ADDRESS="$CURRENT_IP:$RAY_PORT"
  echo "waiting up to ${NODE_WAIT_S} s for $TOTAL_DEVICES x $DEVICE_RESOURCE on $NNODES node(s)..."
  "$PYTHON" - "$DEVICE_RESOURCE" "$TOTAL_DEVICES" "$NODE_WAIT_S" "$NNODES" <<'PY' || exit 3
import sys, time, ray
from mindspeed_rl.platform.ray_cluster import init_ray
resource, total, wait_s, nnodes = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
init_ray({}, 0, None)  # RAY_ADDRESS, with the token the trainer uses
deadline, shown = time.monotonic() + wait_s, None
while True:
    joined = int(ray.cluster_resources().get(resource, 0))
    nodes = sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"])
    if joined >= total:
        print(f"{joined} x {resource} on nodes {', '.join(nodes)}", flush=True)
        break
    if time.monotonic() >= deadline:
        print(f"error: after {wait_s:.0f} s only {joined} of {total} x {resource} joined (nodes up: "
              f"{', '.join(nodes)}; NNODES={nnodes}): run this script on the other nodes with "
              "MASTER_ADDR set to this node's IP, or raise NODE_WAIT_S", file=sys.stderr)
        sys.exit(1)
    if joined != shown:
        print(f"  {joined} / {total} devices joined (nodes up: {', '.join(nodes)})", flush=True)
        shown = joined
    time.sleep(2)
PY
  set +e
  "${TRAIN_CMD[@]}"
  status=$?
  set -e
  exit $status   # the EXIT trap stops this node's Ray
fi

# a worker node: join the head (bounded), then stay until the head goes away
[ "$RAY_AUTH_MODE" = token ] && wait_token
deadline=$((SECONDS + NODE_WAIT_S))
until start_ray $((deadline - SECONDS > 10 ? deadline - SECONDS : 10)) "${WORKER_CMD[@]}"; do
  if grep -qiE "auth.*token|InvalidAuthToken|Unauthenticated" "$RAY_LOG"; then
    tail -n 5 "$RAY_LOG" >&2
    fail "the head at $MASTER_ADDR:$RAY_PORT refused this node's Ray token ($TOKEN_FILE): give every node the head's token, or RAY_AUTH_MODE=disabled on every node"
  fi
  [ $SECONDS -lt $deadline ] || fail "the head $MASTER_ADDR:$RAY_PORT did not answer in ${NODE_WAIT_S} s: start this script on the master node, check MASTER_ADDR and RAY_PORT (log: $RAY_LOG)"
  echo "head $MASTER_ADDR:$RAY_PORT not reachable yet; retrying in 5 s"; sleep 5
done
echo "joined $MASTER_ADDR:$RAY_PORT as $CURRENT_IP; training runs on the master node"
head_up() { timeout 5 bash -c "exec 3<>/dev/tcp/$MASTER_ADDR/$RAY_PORT" 2>/dev/null; }
misses=0
while kill -0 "$RAY_PID" 2>/dev/null; do
  sleep 5
  if head_up; then misses=0; else misses=$((misses + 1)); fi
  if [ $misses -ge 2 ]; then
    echo "the head $MASTER_ADDR:$RAY_PORT is gone (the run ended or the master failed); stopping this node's Ray"
    exit 0
  fi
done
tail -n 20 "$RAY_LOG" >&2
echo "error: this node's Ray stopped on its own (log: $RAY_LOG)" >&2
exit 1
