#!/usr/bin/env bash
# Qwen2.5-32B(-Instruct): Hugging Face -> Megatron-core, TP 8 PP 1 (the DAPO A3 recipe layout,
# configs/dapo_qwen25_32b_A3.yaml). Edit the paths; paths are relative to the directory you run it
# from.
#
#   bash examples/ckpt/ckpt_convert_qwen25_32b_hf2mcore.sh
#
# Output: ${SAVE_DIR}/latest_checkpointed_iteration.txt + release/mp_rank_0X/model_optim_rng.pt,
# the directory to set as actor_config.load. Add --verify to compare logits with transformers
# (needs ~2 x 130 GB of host memory in fp32 for a 32B model). See docs/checkpoint_conversion.md.
set -euo pipefail

HF_DIR=./model_from_hf/Qwen2.5-32B-Instruct
SAVE_DIR=./model_weights/qwen25_32b_mcore_tp8_pp1

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "${ROOT}/examples/python_env.sh"  # sets PYTHON (docs/install.md: which interpreter)
"${PYTHON}" "${ROOT}/cli/convert_ckpt.py" \
    --use-mcore-models \
    --model-type GPT \
    --model-type-hf qwen2 \
    --load-model-type hf \
    --save-model-type mg \
    --target-tensor-parallel-size 8 \
    --target-pipeline-parallel-size 1 \
    --add-qkv-bias \
    --load-dir "${HF_DIR}" \
    --save-dir "${SAVE_DIR}" \
    "$@"
