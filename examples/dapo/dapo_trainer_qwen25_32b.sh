#!/usr/bin/env bash
# DAPO for qwen25_32b on Ascend (or NVIDIA) nodes. Run this same script on every node:
#   bash examples/dapo/dapo_trainer_qwen25_32b.sh [yaml-name] [section.key=value ...] [--max-restarts N]
# Single node: NNODES=1 and MASTER_ADDR = this node's IP (CURRENT_IP). Multi-node: identical code,
# weight and data paths on every node; MASTER_ADDR is the first node's IP everywhere.
export NNODES=${NNODES:-1}
export NPUS_PER_NODE=${NPUS_PER_NODE:-16}
export MASTER_ADDR=${MASTER_ADDR:-}   # empty with NNODES=1: this node's IP
export SOCKET_IFNAME=${SOCKET_IFNAME:-}  # empty: the interface of the default route
export DEFAULT_YAML=dapo_qwen25_32b_A3
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"
