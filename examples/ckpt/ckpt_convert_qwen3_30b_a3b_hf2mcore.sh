#!/usr/bin/env bash
# Qwen3-30B-A3B (MoE, 128 experts, top-8): Hugging Face -> Megatron-core, TP 4 PP 1 EP 2, experts
# as GroupedMLP weights (moe_grouped_gemm: true in configs/model/qwen3_30b_a3b.yaml). Experts are
# split over TP as well (Megatron's expert TP = TP); for a run with actor_config.moe_tp_extend_ep:
# true (the Ascend suite's recipe: each of the TP x EP = 8 ranks holds 16 whole experts) add
# --moe-tp-extend-ep. Edit the paths (relative to the directory you run it from).
#
#   bash examples/ckpt/ckpt_convert_qwen3_30b_a3b_hf2mcore.sh [--moe-tp-extend-ep] [--verify]
#
# Output: release/mp_rank_0T_00E/model_optim_rng.pt for TP rank T and EP rank E.
set -euo pipefail

HF_DIR=./model_from_hf/Qwen3-30B-A3B
SAVE_DIR=./model_weights/qwen3_30b_a3b_mcore_tp4_ep2

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "${ROOT}/examples/python_env.sh"  # sets PYTHON (docs/install.md: which interpreter)
"${PYTHON}" "${ROOT}/cli/convert_ckpt.py" \
    --use-mcore-models \
    --model-type GPT \
    --model-type-hf qwen3-moe \
    --load-model-type hf \
    --save-model-type mg \
    --target-tensor-parallel-size 4 \
    --target-pipeline-parallel-size 1 \
    --target-expert-parallel-size 2 \
    --moe-grouped-gemm \
    --load-dir "${HF_DIR}" \
    --save-dir "${SAVE_DIR}" \
    "$@"
