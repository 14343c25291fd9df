"""Sampling streams: every (engine, prompt, sample) of an iteration draws from its own seed, and
only the first TP peer of each engine sends its outputs back to the driver."""

import torch

from mindspeed_rl.rollout.base import pack_responses
from mindspeed_rl.rollout.sampling import SamplingParams
from mindspeed_rl.rollout.seeds import derived_seed, engine_seed, prompt_seed
from mindspeed_rl.workers.actor_group import RolloutGroup
from mindspeed_rl.workers.worker_info import WorkerInfo


def test_derived_seeds_depend_on_every_id_and_fit_int64():
    seeds = {derived_seed(7, a, b) for a in range(50) for b in range(50)}
    assert len(seeds) == 2500
    assert derived_seed(7, 1, 2) != derived_seed(7, 2, 1) != derived_seed(8, 1, 2)
    assert all(0 <= s < 2**63 - 2**16 for s in seeds)
    assert derived_seed(7, 3) == derived_seed(7, 3)


def test_no_two_samples_of_an_iteration_share_a_stream():
    """The streams the engines use (sample k of prompt i on engine e: prompt_seed + k), over the
    generation rounds and the validation call of a few iterations, 8 engines x 64 prompts x 16."""
    streams = set()
    count = 0
    for call_seed in [1234 * 1_000_003 + s for s in (0, 1, 1000, 1001, -1, -2)]:
        for e in range(8):
            for i in range(64):
                base = prompt_seed(engine_seed(call_seed, e), i)
                streams.update(base + k for k in range(16))
                count += 16
    assert len(streams) == count


def _info(rank, tp):
    return WorkerInfo(
        rank=rank, local_rank=rank, dp_rank=0, dp_size=1, tp_rank=0, pp_rank=0, last_stage=True,
        pid=rank, node_id=None, engine="vllm", eos_token_ids=(1,), pad_token_id=0,
        returns_rollout=rank % tp == 0,
    )  # fmt: skip


class _Workers:
    """Four ranks, two engines of TP 2; an engine answers each of its prompts with its seed."""

    def __init__(self, infos):
        self.infos, self.calls = infos, []

    def call(self, method, per_rank):
        assert method == "generate"
        self.calls.append(per_rank)
        outs = []
        for info, (prompts, params) in zip(self.infos, per_rank):
            if not info.returns_rollout:
                outs.append(None)
                continue
            seqs = [[p[0], params.seed % 1000] for p in prompts]
            outs.append(
                pack_responses(seqs, [[0.0, 0.0]] * len(seqs), ["length"] * len(seqs),
                               list(range(len(seqs))), 0)
            )  # fmt: skip
        return outs


def test_rollout_group_seeds_each_engine_and_reads_one_peer_per_engine():
    infos = [_info(r, tp=2) for r in range(4)]
    workers = _Workers(infos)
    group = RolloutGroup(workers, infos, infer_tp=2)
    out = group.generate([[10], [11], [12], [13]], SamplingParams(seed=5))
    assert out.responses[:, 0].tolist() == [10, 11, 12, 13]  # prompt order restored
    (per_rank,) = workers.calls
    seeds = [params.seed for _, params in per_rank]
    assert seeds[0] == seeds[1] != seeds[2] == seeds[3]  # TP peers agree, engines differ
    assert seeds[0] == engine_seed(5, 0) and seeds[2] == engine_seed(5, 1)
    assert torch.equal(out.response_mask, torch.ones(4, 2, dtype=torch.long))
