"""The NPU constraint sets are internally consistent: every ``==`` pin satisfies the requirements
that the other pinned packages declare (their wheels' Requires-Dist, recorded in
fixtures/requires.json by fixtures/dump_requires.py), and each supports the file's Python."""

import json
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "requires.json").read_text())


def _pins(path: Path) -> tuple[dict[str, Version], set[str], str]:
    """(name -> pinned version, names installed with --no-deps, the file's Python)."""
    pins, no_deps, python = {}, set(), None
    for raw in path.read_text().splitlines():
        line, _, comment = raw.partition("#")
        if raw.startswith("# python:"):
            python = raw.split(":", 1)[1].strip()
        if "==" in line:
            name, version = (part.strip() for part in line.split("=="))
            pins[canonicalize_name(name)] = Version(version)
            if "no-deps" in comment:
                no_deps.add(canonicalize_name(name))
    assert python, f"{path}: a '# python: X.Y' line names the interpreter"
    return pins, no_deps, python


@pytest.mark.parametrize("rel", sorted(FIXTURE))
def test_every_pin_satisfies_the_others_requirements(rel):
    pins, no_deps, python = _pins(ROOT / rel)
    recorded = {canonicalize_name(k): v for k, v in FIXTURE[rel].items()}
    assert set(recorded) == set(pins), "regenerate: python tests/install/fixtures/dump_requires.py"
    env = {"python_version": python, "python_full_version": f"{python}.0",
           "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "aarch64",
           "extra": ""}  # fmt: skip
    problems = []
    for name, meta in recorded.items():
        assert Version(meta["version"]) == pins[name], f"{name}: fixture is for another version"
        if meta["requires_python"] and Version(f"{python}.0") not in SpecifierSet(
            meta["requires_python"]
        ):
            problems.append(f"{name} requires Python {meta['requires_python']}, file has {python}")
        if name in no_deps:
            continue  # installed with --no-deps: its wheel's requirements are not used
        for text in meta["requires_dist"]:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            dep = canonicalize_name(req.name)
            if dep in pins and not req.specifier.contains(pins[dep], prereleases=True):
                problems.append(f"{name}=={pins[name]} requires {text}; pinned {dep}=={pins[dep]}")
    assert not problems, "\n".join(problems)


def test_the_first_column_follows_the_ascend_suite():
    pins, _, python = _pins(ROOT / "constraints/npu.txt")
    assert python == "3.10"
    expected = {"torch": "2.7.1", "torch-npu": "2.7.1", "vllm": "0.11.0", "vllm-ascend": "0.11.0",
                "megatron-core": "0.12.1", "transformers": "4.57.1"}  # fmt: skip
    assert {k: str(pins[k]) for k in expected} == expected
