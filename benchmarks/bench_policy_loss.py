"""Actor loss + backward: time and peak memory for a [512, 2048] batch, next to a baseline.

    python benchmarks/bench_policy_loss.py                    # CPU, float32, [512, 2048]
    python benchmarks/bench_policy_loss.py --device cuda --batch 512 --length 4096

Both variants compute the same DAPO loss on the same inputs: clip-higher (0.2 / 0.28), dual clip
(3.0), entropy bonus, k3 KL, token-mean; only the loss, from per-token log-probs and entropy (the
model's forward and backward are not included). They must agree to 1e-5.

- baseline: the textbook formulation as verl writes it (``compute_policy_loss_vanilla`` +
  ``agg_loss``: masked products, ``torch.min`` for the dual clip, means over the micro-batch),
  metrics computed the same way;
- ours: ``mindspeed_rl.algorithms.policy_loss.policy_loss`` with a global denominator (which here
  equals the batch's own token count) and its full metric set.

Time: best of ``--repeats`` of forward + backward. Peak memory: on CUDA,
``torch.cuda.max_memory_allocated`` above the inputs; on CPU, the rise of the process's peak RSS
during the first run, measured in a fresh child process per variant (an upper bound that includes
allocator slack). Saved: bytes autograd holds for backward beyond the inputs (exact, any device):
the memory the loss adds to a training step's activation peak.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time

import torch

from mindspeed_rl.algorithms.loss_aggregation import loss_denominator
from mindspeed_rl.algorithms.policy_loss import policy_loss

LOW, HIGH, DUAL, ENTROPY_COEFF, KL_COEF = 0.2, 0.28, 3.0, 0.001, 0.01


def make_inputs(batch: int, length: int, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(length // 4, length + 1, (batch,), generator=g)
    mask = (torch.arange(length) < lengths.unsqueeze(1)).float()
    log_probs = -torch.rand(batch, length, generator=g) * 3
    inputs = {
        "log_probs": log_probs,
        "old_log_probs": log_probs + 0.2 * torch.randn(batch, length, generator=g),
        "ref_log_probs": log_probs + 0.3 * torch.randn(batch, length, generator=g),
        "advantages": torch.randn(batch, 1, generator=g).expand(batch, length) * mask,
        "entropy": torch.rand(batch, length, generator=g) * 2,
        "mask": mask,
    }
    return {k: v.contiguous().to(device) for k, v in inputs.items()}


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum()


def baseline_loss(log_probs, old_log_probs, ref_log_probs, advantages, entropy, mask):
    """verl's vanilla PPO loss with dual clip, token-mean agg_loss, k3 KL and entropy."""
    negative_approx_kl = torch.clamp(log_probs - old_log_probs, min=-20.0, max=20.0)
    ratio = torch.exp(negative_approx_kl)
    ppo_kl = _masked_mean(-negative_approx_kl, mask)
    pg_losses1 = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1 - LOW, 1 + HIGH)
    clip_pg_losses1 = torch.maximum(pg_losses1, pg_losses2)
    pg_clipfrac = _masked_mean(torch.gt(pg_losses2, pg_losses1).float(), mask)
    pg_losses3 = -advantages * DUAL
    clip_pg_losses2 = torch.min(pg_losses3, clip_pg_losses1)
    pg_clipfrac_lower = _masked_mean(
        torch.gt(clip_pg_losses1, pg_losses3) * (advantages < 0).float(), mask
    )
    pg_losses = torch.where(advantages < 0, clip_pg_losses2, clip_pg_losses1)
    pg_loss = _masked_mean(pg_losses, mask)
    entropy_loss = _masked_mean(entropy, mask)
    kl = torch.clamp(ref_log_probs - log_probs, min=-20, max=20)
    kl = torch.clamp(torch.exp(kl) - kl - 1, min=-10, max=10)
    kl_loss = _masked_mean(kl, mask)
    loss = pg_loss - ENTROPY_COEFF * entropy_loss + KL_COEF * kl_loss
    metrics = [x.detach() for x in (pg_loss, pg_clipfrac, pg_clipfrac_lower, ppo_kl, kl_loss)]
    return loss, metrics


def ours_loss(log_probs, old_log_probs, ref_log_probs, advantages, entropy, mask):
    out = policy_loss(
        log_probs,
        old_log_probs,
        advantages,
        mask,
        loss_agg_mode="token-mean",
        global_denominator=loss_denominator(mask, "token-mean"),
        clip_ratio_low=LOW,
        clip_ratio_high=HIGH,
        clip_ratio_c=DUAL,
        entropy=entropy,
        entropy_coeff=ENTROPY_COEFF,
        use_kl_loss=True,
        ref_log_probs=ref_log_probs,
        kl_penalty_kind="low_var_kl",
        kl_coef=KL_COEF,
    )
    return out.loss, list(out.metrics.values())


VARIANTS = {"baseline": baseline_loss, "ours": ours_loss}


def run_once(fn, inputs: dict[str, torch.Tensor]) -> tuple[float, torch.Tensor]:
    log_probs = inputs["log_probs"].clone().requires_grad_(True)
    entropy = inputs["entropy"].clone().requires_grad_(True)
    loss, _ = fn(
        log_probs,
        inputs["old_log_probs"],
        inputs["ref_log_probs"],
        inputs["advantages"],
        entropy,
        inputs["mask"],
    )
    loss.backward()
    return loss.item(), log_probs.grad


def saved_for_backward(fn, inputs: dict[str, torch.Tensor]) -> int:
    """Bytes of tensors autograd keeps for backward, inputs excluded (deterministic, any device)."""
    log_probs = inputs["log_probs"].clone().requires_grad_(True)
    entropy = inputs["entropy"].clone().requires_grad_(True)
    resident = {t.untyped_storage().data_ptr() for t in (*inputs.values(), log_probs, entropy)}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in resident:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn(
            log_probs,
            inputs["old_log_probs"],
            inputs["ref_log_probs"],
            inputs["advantages"],
            entropy,
            inputs["mask"],
        )
    return sum(saved.values())


def measure(name: str, args: argparse.Namespace, queue) -> None:
    """In a fresh process: peak memory of the first run, then the best time of the next ones."""
    torch.set_num_threads(args.threads)
    inputs = make_inputs(args.batch, args.length, args.device)
    fn = VARIANTS[name]
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_once(fn, inputs)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        run_once(fn, inputs)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        loss, grad = run_once(fn, inputs)
        if args.device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    saved = saved_for_backward(fn, inputs)
    queue.put((name, best, peak, saved, loss, grad.cpu().numpy()))  # by value, not a shared fd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")

    ctx = multiprocessing.get_context("spawn")
    results = {}
    for name in VARIANTS:
        queue = ctx.Queue()
        process = ctx.Process(target=measure, args=(name, args, queue))
        process.start()
        results[name] = queue.get()
        process.join()
    *_, loss_ref, grad_ref = results["baseline"]
    *_, loss, grad = results["ours"]
    grad_ref, grad = torch.from_numpy(grad_ref), torch.from_numpy(grad)
    assert abs(loss - loss_ref) <= 1e-5 * max(1.0, abs(loss_ref)), (loss, loss_ref)
    assert torch.allclose(grad, grad_ref, rtol=1e-5, atol=1e-9), "gradients differ"
    tokens = int(make_inputs(args.batch, args.length, "cpu")["mask"].sum())
    print(
        f"[{args.batch}, {args.length}] {args.device} float32, {tokens} valid tokens, "
        f"{args.threads} threads, best of {args.repeats}; loss {loss:.6f} (both)"
    )
    print(f"{'':10s} {'loss+backward ms':>17s} {'peak extra MiB':>15s} {'saved MiB':>10s}")
    for name, seconds, peak, saved, _, _ in results.values():
        print(f"{name:10s} {seconds * 1e3:17.1f} {peak / 2**20:15.1f} {saved / 2**20:10.1f}")


if __name__ == "__main__":
    main()
