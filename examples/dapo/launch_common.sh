#!/usr/bin/env bash
# Shared launch flow of the DAPO scripts (sourced by dapo_trainer_<model>.sh; edit those, not this).
# The master node starts Ray's head, waits until every node's devices have joined, then runs the
# trainer; the other nodes join the head and wait. Run the same script on every node.
set -euo pipefail

: "${NNODES:?}" "${NPUS_PER_NODE:?}" "${SOCKET_IFNAME:?}" "${DEFAULT_YAML:?}"
RAY_PORT="${RAY_PORT:-6766}"
YAML="${1:-$DEFAULT_YAML}"
PROJECT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$PROJECT_DIR"   # Ray must be started from the project directory on every node
ROOT="$PROJECT_DIR"
source "$PROJECT_DIR/examples/python_env.sh"   # sets PYTHON: $PYTHON, a virtualenv, or .venv
ray() { "$PYTHON" -m ray.scripts.scripts "$@"; }   # the ray CLI of that interpreter, not PATH's

CURRENT_IP=$(ip -4 addr show "$SOCKET_IFNAME" 2>/dev/null | awk '/inet /{print $2}' | cut -d/ -f1 | head -n1)
if [ -z "$CURRENT_IP" ]; then
  echo "error: no IPv4 address on SOCKET_IFNAME=$SOCKET_IFNAME; set it to this node's interface (see 'ip addr')" >&2
  exit 2
fi
if [ -z "${MASTER_ADDR:-}" ]; then
  if [ "$NNODES" -eq 1 ]; then MASTER_ADDR="$CURRENT_IP"; else
    echo "error: set MASTER_ADDR to the first node's IP on every node (NNODES=$NNODES)" >&2; exit 2
  fi
fi

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

# jemalloc: located by the platform layer (no hard-coded path); long runs need it
eval "$("$PYTHON" cli/jemalloc_env.py ${JEMALLOC_OPTIONAL:+--optional})"

# the Ray resource one worker reserves, as the platform layer names it (NPU / GPU / cpu_slot)
DEVICE_RESOURCE=$("$PYTHON" -c "from mindspeed_rl.platform.device import ray_resource_name; print(ray_resource_name())")
TOTAL_DEVICES=$((NNODES * NPUS_PER_NODE))

if [ "$CURRENT_IP" = "$MASTER_ADDR" ]; then
  ray start --head --port "$RAY_PORT" --node-ip-address "$CURRENT_IP" \
    --resources="{\"$DEVICE_RESOURCE\": $NPUS_PER_NODE}"
  # the trainer joins this cluster, and no other, only through RAY_ADDRESS (without it, it would
  # start a local cluster of its own)
  export RAY_ADDRESS="$CURRENT_IP:$RAY_PORT"
  echo "waiting for $TOTAL_DEVICES x $DEVICE_RESOURCE on $NNODES node(s)..."
  while true; do
    joined=$("$PYTHON" - "$DEVICE_RESOURCE" <<'PY'
import sys, ray
from mindspeed_rl.platform.ray_cluster import init_ray
init_ray({}, 0, None)  # RAY_ADDRESS, with this user's token as the trainer uses it
print(int(ray.cluster_resources().get(sys.argv[1], 0)))
PY
)
    [ "$joined" -ge "$TOTAL_DEVICES" ] && break
    echo "  $joined / $TOTAL_DEVICES devices joined"; sleep 5
  done
  set +e
  "$PYTHON" cli/train_dapo.py --config-name "$YAML" "${@:2}"
  status=$?
  set -e
  ray stop   # stops this node's Ray only (never pkill: other users' jobs may be running)
  exit $status
else
  until ray start --address="$MASTER_ADDR:$RAY_PORT" --node-ip-address "$CURRENT_IP" \
      --resources="{\"$DEVICE_RESOURCE\": $NPUS_PER_NODE}"; do
    echo "head $MASTER_ADDR:$RAY_PORT not reachable yet; retrying in 5 s"; sleep 5
  done
  echo "joined $MASTER_ADDR:$RAY_PORT; training runs on the master node"
fi
