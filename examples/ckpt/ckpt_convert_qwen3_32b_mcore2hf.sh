#!/usr/bin/env bash
# Qwen3-32B: Megatron-core (any layout) -> Hugging Face. Edit the paths; paths are relative to the
# directory you run it from.
#
#   bash examples/ckpt/ckpt_convert_qwen3_32b_mcore2hf.sh [--verify]
set -euo pipefail

LOAD_DIR=./ckpt/qwen3_32b_dapo
HF_CONFIG_DIR=./model_from_hf/Qwen3-32B
SAVE_DIR=./model_weights/qwen3_32b_dapo_hf

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "${ROOT}/examples/python_env.sh"  # sets PYTHON (docs/install.md: which interpreter)
"${PYTHON}" "${ROOT}/cli/convert_ckpt.py" \
    --use-mcore-models \
    --model-type GPT \
    --model-type-hf qwen3 \
    --load-model-type mg \
    --save-model-type hf \
    --load-dir "${LOAD_DIR}" \
    --hf-config-dir "${HF_CONFIG_DIR}" \
    --save-dir "${SAVE_DIR}" \
    "$@"
