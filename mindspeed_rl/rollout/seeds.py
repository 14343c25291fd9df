"""Independent sampling streams: one seed per (call, engine, prompt, sample), derived by hashing.

A seed per engine call with adjacent engines one apart overlaps as soon as an engine numbers its
samples seed, seed + 1, ... (vLLM gives sample k of a request the request's seed plus k). Hashing
the identifiers through splitmix64 (Steele, Lea, Flood: "Fast splittable pseudorandom number
generators", OOPSLA 2014) spreads them over 63 bits, so the seed + k runs of different prompts and
engines are disjoint unless two 63-bit hashes land within ``n`` of each other.

Stream of sample k of prompt i on engine e in a call with base seed s (both engines):
``prompt_seed(engine_seed(s, e), i) + k``.
"""

from __future__ import annotations

_MASK64 = (1 << 64) - 1
_SEED_BITS = 63  # torch.Generator and vLLM both take a non-negative int64 seed


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def derived_seed(base_seed: int, *ids: int) -> int:
    """A seed in [0, 2**63 - 2**16) for the stream named by ``ids`` under ``base_seed``: each id
    is mixed in turn, so any change of any id gives an unrelated seed. The top 2**16 values are
    left out so that ``seed + k`` (k < 65536 samples) stays a valid seed."""
    x = _splitmix64(base_seed & _MASK64)
    for i in ids:
        x = _splitmix64(x ^ (i & _MASK64))
    return x % ((1 << _SEED_BITS) - (1 << 16))


def engine_seed(call_seed: int, engine: int) -> int:
    """The seed an engine receives for its share of one generate call."""
    return derived_seed(call_seed, engine)


def prompt_seed(engine_call_seed: int, prompt: int) -> int:
    """The seed of the ``prompt``-th prompt of an engine call; its sample k uses this plus k."""
    return derived_seed(engine_call_seed, prompt)
