"""The CPU adaptor makes Megatron run without touching what the rest of the process sees."""

import json
import subprocess
import sys

import pytest
import torch

from mindspeed_rl.platform import cpu_adaptor

_LOGITS_SCRIPT = r"""
import sys, torch
with_adaptor, model_dir, out = sys.argv[1] == "1", sys.argv[2], sys.argv[3]
if with_adaptor:
    from mindspeed_rl.platform.megatron_setup import prepare_megatron
    prepare_megatron()
    import megatron.core.models.gpt  # noqa: F401  (Megatron loaded beside the HF engine)
    from megatron.core.tensor_parallel import random as mrandom
    assert mrandom.torch.cuda.current_device() == torch.device("cpu")
import transformers
model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
ids = torch.arange(3, 40).reshape(1, -1) % model.config.vocab_size
with torch.no_grad():
    torch.save(model(ids).logits, out)
"""


def _tiny_qwen2(path) -> None:
    import transformers

    config = transformers.Qwen2Config(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        rope_theta=10000.0, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.Qwen2ForCausalLM(config).save_pretrained(path)


def test_transformers_logits_are_bit_identical_with_the_adaptor_active(tmp_path):
    _tiny_qwen2(tmp_path / "model")
    logits = []
    for flag in ("0", "1"):
        out = tmp_path / f"logits{flag}.pt"
        subprocess.run(
            [sys.executable, "-c", _LOGITS_SCRIPT, flag, str(tmp_path / "model"), str(out)],
            check=True,
        )
        logits.append(torch.load(out, weights_only=True))
    assert logits[0].abs().sum() > 0
    assert torch.equal(logits[0], logits[1])


_SCOPE_SCRIPT = r"""
import json, torch
from mindspeed_rl.platform.megatron_setup import prepare_megatron
prepare_megatron()
from megatron.core.optimizer import clip_grads
from megatron.core.tensor_parallel import random as mrandom
t = torch.zeros(2)
report = {"outside_type": t.type(), "megatron_torch_is_real": clip_grads.torch is torch}
try:
    t.cuda()
    report["outside_cuda"] = "no error"
except (AssertionError, RuntimeError) as err:
    report["outside_cuda"] = "raised"
# Megatron's RNG tracker forks the CPU generator, which is this process's device generator
torch.manual_seed(3)
mrandom.get_cuda_rng_tracker().add("test-rng", 7)
with mrandom.get_cuda_rng_tracker().fork("test-rng"):
    forked = torch.rand(1).item()
torch.manual_seed(7)
report["fork_uses_its_seed"] = forked == torch.rand(1).item()
torch.manual_seed(3)
expected_after = torch.rand(1).item()
torch.manual_seed(3)
mrandom.get_cuda_rng_tracker().reset()
mrandom.get_cuda_rng_tracker().add("again", 7)
with mrandom.get_cuda_rng_tracker().fork("again"):
    torch.rand(1)
report["fork_restores_state"] = torch.rand(1).item() == expected_after
print(json.dumps(report))
"""


def test_adaptor_is_scoped_to_megatron():
    out = subprocess.run(
        [sys.executable, "-c", _SCOPE_SCRIPT], check=True, capture_output=True, text=True
    ).stdout
    report = json.loads(out.strip().splitlines()[-1])
    assert report == {
        "outside_type": "torch.FloatTensor",
        "megatron_torch_is_real": False,
        "outside_cuda": "raised",
        "fork_uses_its_seed": True,
        "fork_restores_state": True,
    }


def test_refuses_to_install_on_an_accelerator_host(monkeypatch):
    monkeypatch.setattr("mindspeed_rl.platform.device.device_type", lambda: "cuda")
    monkeypatch.setattr(cpu_adaptor, "_installed", False)
    with pytest.raises(RuntimeError, match="must not be installed on a cuda host"):
        cpu_adaptor.install()
