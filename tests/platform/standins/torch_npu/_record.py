"""Appends one JSON line per event to the file named by STANDIN_RECORD."""

import json
import os
import sys


def megatron_modules() -> list[str]:
    return sorted(m for m in sys.modules if m == "megatron" or m.startswith("megatron."))


def event(name: str, **extra) -> None:
    with open(os.environ["STANDIN_RECORD"], "a") as f:
        f.write(json.dumps({"event": name, "megatron": megatron_modules(), **extra}) + "\n")
