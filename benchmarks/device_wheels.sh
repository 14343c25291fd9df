#!/usr/bin/env bash
# What the device check needs on a lent GPU machine that has torch and transformers but no
# network, Ray or megatron-core: megatron-core, pydantic (+ its cp312 core), omegaconf. Downloads
# them for Python 3.12 / x86_64 and unpacks them into .whl/device/site (git-ignored, ~15 MB), a
# directory to put on PYTHONPATH there; docs/platform.md has the device-side command.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.whl/device
rm -rf "$out" && mkdir -p "$out/dl" "$out/site"
pip download -q --no-deps -d "$out/dl" --python-version 3.12 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  "megatron-core==0.16.1" "pydantic==2.*" "pydantic-core" "annotated-types" \
  "typing-inspection" "omegaconf==2.3.*" "antlr4-python3-runtime==4.9.3" 2>/dev/null
for wheel in "$out"/dl/*.whl; do python3 -m zipfile -e "$wheel" "$out/site"; done
for sdist in "$out"/dl/*.tar.gz; do tar -xzf "$sdist" -C "$out/dl"; done
# the sdists are pure Python where the check needs them (megatron's C++ dataset helpers are not
# used by the worker path)
cp -r "$out"/dl/megatron_core-*/megatron "$out/site/"
cp -r "$out"/dl/antlr4-python3-runtime-*/src/antlr4 "$out/site/"
rm -rf "$out/dl"
du -sh "$out/site"
