"""The memory order of a colocated step, and the ledger that shows it was kept.

Each operation of the integrated worker runs in a phase that names what must be on the device:

| phase        | actor on the device         | engine on the device  |
|--------------|-----------------------------|-----------------------|
| update       | params, grads, optimizer    | nothing               |
| sync         | params                      | weights               |
| generate     | nothing                     | weights, KV cache     |
| log_prob     | params                      | nothing               |
| ref_log_prob | params, and the reference   | nothing               |
| save         | params, optimizer           | nothing               |

Entering a phase first releases what it does not need (the engine sleeps, actor groups are
offloaded), then restores what it needs, actor before engine, weights before the KV cache: one
step is update -> offload grads and optimizer -> wake engine weights -> sync -> offload params ->
wake KV cache -> generate -> engine sleeps -> reload params (log-probs) -> reload grads and
optimizer (update). Actor groups whose ``offload_train_*`` switch is off simply stay resident.
The reference model (built only with a KL term) is on the device in ``ref_log_prob`` only; the
actor's params stay there, as the log-prob pass before and the update after need them.
docs/memory.md has the sizes this order is for.
"""

from __future__ import annotations

import dataclasses

ACTOR_GROUPS = ("params", "grads", "optimizer")


@dataclasses.dataclass(frozen=True)
class Phase:
    name: str
    actor: frozenset[str]
    engine: tuple[str, ...]  # in wake-up order
    reference: bool = False


PHASES = {
    p.name: p
    for p in (
        Phase("update", frozenset(ACTOR_GROUPS), ()),
        Phase("sync", frozenset({"params"}), ("weights",)),
        Phase("generate", frozenset(), ("weights", "kv_cache")),
        Phase("log_prob", frozenset({"params"}), ()),
        Phase("save", frozenset({"params", "optimizer"}), ()),
        Phase("ref_log_prob", frozenset({"params"}), (), reference=True),
        # before the engine exists: it is created with the training state off the device
        Phase("engine_init", frozenset(), ()),
    )
}

# Ledger categories, in the order docs/memory.md prints them.
CATEGORIES = (
    "actor_params",
    "actor_grads",
    "actor_optimizer",
    "engine_weights",
    "kv_cache",
    "reference",
)


def enter_phase(phase: Phase, offloader, engine, reference=None) -> None:
    """Move to ``phase``: release first, then restore (see the module docstring).
    ``reference``: the reference model's ``ModuleOffloader`` (None without a KL term)."""
    if engine is not None and not engine.awake.issubset(phase.engine):
        engine.sleep()  # engines sleep whole; what the phase needs wakes below
    if reference is not None and not phase.reference:
        reference.ensure(False)
    offloader.ensure(phase.actor)
    if reference is not None and phase.reference:
        reference.ensure(True)
    if engine is not None:
        for tag in phase.engine:
            if tag not in engine.awake:
                engine.wake_up([tag])


@dataclasses.dataclass
class LedgerEntry:
    phase: str
    resident: dict[str, int | None]  # category -> bytes (None: the engine cannot tell)
    device_allocated: int | None  # the allocator's count on an accelerator, None on CPU

    def total(self) -> int:
        return sum(v for v in self.resident.values() if v is not None)


class MemoryLedger:
    """Bytes resident on this rank's device per phase, as measured from the tensors themselves
    (each group's storages) and, on accelerators, from the allocator."""

    def __init__(self, limit: int = 256) -> None:
        self.entries: list[LedgerEntry] = []
        self.limit = limit  # keep the last entries only: one per phase transition

    def record(self, phase: str, offloader, engine, reference=None) -> None:
        from mindspeed_rl.platform.device import is_accelerator, memory_stats

        actor = offloader.resident_bytes()
        resident: dict[str, int | None] = {
            "actor_params": actor["params"],
            "actor_grads": actor["grads"],
            "actor_optimizer": actor["optimizer"],
            "engine_weights": 0,
            "kv_cache": 0,
            "reference": reference.resident_bytes() if reference is not None else 0,
        }
        if engine is not None:
            resident.update(engine.resident_bytes())
        allocated = None
        if is_accelerator():
            allocated = int(memory_stats()["allocated_gb"] * (1 << 30))
        self.entries.append(LedgerEntry(phase, resident, allocated))
        del self.entries[: -self.limit]

    def as_dicts(self) -> list[dict]:
        return [dataclasses.asdict(e) for e in self.entries]

    def metrics(self) -> dict[str, float]:
        """GiB per phase from its latest entry: ``memory/<phase>_gib`` (the tensors' bytes) and,
        on accelerators, ``memory/<phase>_allocated_gib`` (the allocator's count)."""
        out: dict[str, float] = {}
        for entry in self.entries:
            out[f"memory/{entry.phase}_gib"] = entry.total() / (1 << 30)
            if entry.device_allocated is not None:
                out[f"memory/{entry.phase}_allocated_gib"] = entry.device_allocated / (1 << 30)
        return out
