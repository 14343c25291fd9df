"""What each integrated worker reports to the driver after set-up."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """What one rank reports after set-up."""

    rank: int
    local_rank: int
    dp_rank: int
    dp_size: int
    tp_rank: int
    pp_rank: int
    last_stage: bool
    pid: int
    node_id: str | None
    engine: str
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    # the first rank of each rollout engine's TP group: the only one whose generate() returns
    # outputs (its peers hold the same ones and return None)
    returns_rollout: bool = True
    # wall seconds of set-up's phases: imports, distributed, actor (build and load, with the
    # reference), engine, sync
    setup_seconds: dict[str, float] = dataclasses.field(default_factory=dict)
