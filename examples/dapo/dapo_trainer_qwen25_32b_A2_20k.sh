#!/usr/bin/env bash
# DAPO for qwen25_32b with 20k-token responses on four Atlas 800T A2 nodes (64 NPUs, TP 8 PP 2,
# recipe configs/dapo_qwen25_32b_A2_20k.yaml). Run this same script on every node:
#   bash examples/dapo/dapo_trainer_qwen25_32b_A2_20k.sh [section.key=value ...] [--max-restarts N]
# MASTER_ADDR is the first node's IP everywhere; identical code, weight and data paths on every node.
export NNODES=${NNODES:-4}
export NPUS_PER_NODE=${NPUS_PER_NODE:-16}
export MASTER_ADDR=${MASTER_ADDR:-}
export SOCKET_IFNAME=${SOCKET_IFNAME:-}  # empty: the interface of the default route
export DEFAULT_YAML=dapo_qwen25_32b_A2_20k
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"
