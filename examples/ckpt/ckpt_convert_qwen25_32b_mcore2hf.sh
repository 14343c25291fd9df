#!/usr/bin/env bash
# Qwen2.5-32B: Megatron-core (any TP / PP layout, e.g. a DAPO run's actor checkpoint) -> Hugging
# Face safetensors shards + index, config.json, generation config and tokenizer files. Edit the
# paths; paths are relative to the directory you run it from.
#
#   bash examples/ckpt/ckpt_convert_qwen25_32b_mcore2hf.sh [--verify]
#
# LOAD_DIR holds latest_checkpointed_iteration.txt (its iteration is converted). HF_CONFIG_DIR is
# the original Hugging Face model: its config.json and tokenizer are copied into SAVE_DIR.
set -euo pipefail

LOAD_DIR=./ckpt/qwen25_32b_dapo
HF_CONFIG_DIR=./model_from_hf/Qwen2.5-32B-Instruct
SAVE_DIR=./model_weights/qwen25_32b_dapo_hf

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "${ROOT}/examples/python_env.sh"  # sets PYTHON (docs/install.md: which interpreter)
"${PYTHON}" "${ROOT}/cli/convert_ckpt.py" \
    --use-mcore-models \
    --model-type GPT \
    --model-type-hf qwen2 \
    --load-model-type mg \
    --save-model-type hf \
    --load-dir "${LOAD_DIR}" \
    --hf-config-dir "${HF_CONFIG_DIR}" \
    --save-dir "${SAVE_DIR}" \
    "$@"
