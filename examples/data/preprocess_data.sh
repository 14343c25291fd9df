#!/usr/bin/env bash
# Preprocess a dataset for DAPO training.
#
#   bash examples/data/preprocess_data.sh math_17k                  # configs/datasets/math_17k.yaml
#   bash examples/data/preprocess_data.sh path/to/my.yaml workers=16 input=./dataset/x.parquet
#
# Runs from the repository root, so relative paths in the YAML (./dataset/..., ./model_from_hf/...)
# and in key=value overrides are relative to it, as in the Ascend suite. The interpreter: $PYTHON,
# else an active virtualenv, else .venv (examples/python_env.sh). Keys and output files: docs/data.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [[ $# -lt 1 ]]; then
    echo "usage: bash examples/data/preprocess_data.sh <name|config.yaml> [key=value ...]" >&2
    echo "  name: a file in configs/datasets/ without .yaml (e.g. math_17k)" >&2
    exit 2
fi
CONFIG="$1"
shift
if [[ -f "${CONFIG}" ]]; then  # a YAML path given relative to the caller's directory
    CONFIG="$(cd "$(dirname "${CONFIG}")" && pwd)/$(basename "${CONFIG}")"
fi
cd "${ROOT}"
source "${ROOT}/examples/python_env.sh"  # sets PYTHON
exec "${PYTHON}" cli/preprocess_data.py "${CONFIG}" "$@"
