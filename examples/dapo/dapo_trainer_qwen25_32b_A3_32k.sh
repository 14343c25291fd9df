#!/usr/bin/env bash
# DAPO for qwen25_32b with 32k-token responses on Atlas A3 nodes (recipe
# configs/dapo_qwen25_32b_A3_32k.yaml; NNODES x NPUS_PER_NODE must cover its
# rl_config.actor_resource.num_npus). Run this same script on every node:
#   bash examples/dapo/dapo_trainer_qwen25_32b_A3_32k.sh [section.key=value ...] [--max-restarts N]
# MASTER_ADDR is the first node's IP everywhere; identical code, weight and data paths on every node.
export NNODES=${NNODES:-1}
export NPUS_PER_NODE=${NPUS_PER_NODE:-16}
export MASTER_ADDR=${MASTER_ADDR:-}
export SOCKET_IFNAME=${SOCKET_IFNAME:-}  # empty: the interface of the default route
export DEFAULT_YAML=dapo_qwen25_32b_A3_32k
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"
