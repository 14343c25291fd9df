#!/usr/bin/env bash
# Qwen3-30B-A3B: Megatron-core (any TP / PP / EP layout, grouped or sequential experts, the
# moe_tp_extend_ep expert layout: read from the checkpoint) -> Hugging Face (one tensor per expert,
# as on the Hub). Shards that do not record their expert layout (MindSpeed-LLM's converter records
# it in args) and were written with --moe-tp-extend-ep need that flag here too. Edit the paths
# (relative to the directory you run it from).
#
#   bash examples/ckpt/ckpt_convert_qwen3_30b_a3b_mcore2hf.sh [--moe-tp-extend-ep] [--verify]
set -euo pipefail

LOAD_DIR=./ckpt/qwen3_30b_a3b_dapo
HF_CONFIG_DIR=./model_from_hf/Qwen3-30B-A3B
SAVE_DIR=./model_weights/qwen3_30b_a3b_dapo_hf

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "${ROOT}/examples/python_env.sh"  # sets PYTHON (docs/install.md: which interpreter)
"${PYTHON}" "${ROOT}/cli/convert_ckpt.py" \
    --use-mcore-models \
    --model-type GPT \
    --model-type-hf qwen3-moe \
    --load-model-type mg \
    --save-model-type hf \
    --load-dir "${LOAD_DIR}" \
    --hf-config-dir "${HF_CONFIG_DIR}" \
    --save-dir "${SAVE_DIR}" \
    "$@"
