#!/usr/bin/env bash
# Qwen3-32B: Hugging Face -> Megatron-core, TP 8 PP 2 (the DAPO A3 recipe layout,
# configs/dapo_qwen3_32b_A3.yaml; 64 layers, 32 per stage). Qwen3 has qk-layernorm and no qkv bias:
# do not pass --add-qkv-bias. Edit the paths; paths are relative to the directory you run it from.
#
#   bash examples/ckpt/ckpt_convert_qwen3_32b_hf2mcore.sh [--verify]
set -euo pipefail

HF_DIR=./model_from_hf/Qwen3-32B
SAVE_DIR=./model_weights/qwen3_32b_mcore_tp8_pp2

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "${ROOT}/examples/python_env.sh"  # sets PYTHON (docs/install.md: which interpreter)
"${PYTHON}" "${ROOT}/cli/convert_ckpt.py" \
    --use-mcore-models \
    --model-type GPT \
    --model-type-hf qwen3 \
    --load-model-type hf \
    --save-model-type mg \
    --target-tensor-parallel-size 8 \
    --target-pipeline-parallel-size 2 \
    --load-dir "${HF_DIR}" \
    --save-dir "${SAVE_DIR}" \
    "$@"
