"""Find libjemalloc.so.2 and build the environment that makes it the malloc of processes to come.

Why: long Ray runs on Ascend hosts grow host memory until they are killed when glibc's malloc
serves them (its per-thread arenas keep freed memory, fragmented, for the life of the process).
jemalloc hands freed pages back to the kernel on a time-based decay and on demand
(``mindspeed_rl.platform.jemalloc``). It only replaces malloc when the dynamic loader binds it
before libc, that is through ``LD_PRELOAD`` when a process starts; loading it later with ctypes
gives a second allocator that nothing calls. So this module works on the environment of processes
yet to start: launch scripts (``cli/jemalloc_env.py``) and Ray workers (``ray_runtime_env_vars``).

Where distributions put it: Debian / Ubuntu ``/usr/lib/<arch>-linux-gnu/libjemalloc.so.2``
(package libjemalloc2), openEuler / CentOS / RHEL ``/usr/lib64/libjemalloc.so.2`` (package
jemalloc, from EPEL on CentOS / RHEL), source builds ``/usr/local/lib``, conda-forge
``$CONDA_PREFIX/lib``. ``MINDSPEED_RL_JEMALLOC_PATH`` overrides the search.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

JEMALLOC_PATH_ENV = "MINDSPEED_RL_JEMALLOC_PATH"
JEMALLOC_SONAME = "libjemalloc.so.2"  # jemalloc >= 5: the mallctl names used here exist from 5.0

# MALLOC_CONF for long runs (option reference: https://jemalloc.net/jemalloc.3.html):
# - background_thread:true  purge on the decay schedule from jemalloc's own thread, so arenas of
#   threads that went idle (Ray's gRPC pools, loader threads) return memory too; without it decay
#   only advances when the arena's owner allocates again.
# - dirty_decay_ms:10000    freed pages go back to the kernel within ~10 s (jemalloc's default,
#   written out so that a site-wide MALLOC_CONF cannot silently change it).
# - muzzy_decay_ms:0        skip the MADV_FREE ("muzzy") stage: such pages still count in RSS
#   and in the cgroup's memory until the kernel is short of memory, which hides the real usage.
LONG_RUN_MALLOC_CONF = "background_thread:true,dirty_decay_ms:10000,muzzy_decay_ms:0"

# e_machine of the ELF header (offset 18) for the CPU architectures the project runs on.
_ELF_MACHINES = {"x86_64": 62, "aarch64": 183}
_ELF_MAGIC = b"\x7fELF"
_ELF_CLASS_64 = 2  # EI_CLASS byte (offset 4); the project supports 64-bit hosts only

# Install commands by /etc/os-release ID (or an ID_LIKE family).
_INSTALL_COMMANDS = {
    "debian": "apt-get install -y libjemalloc2",
    "ubuntu": "apt-get install -y libjemalloc2",
    "openeuler": "dnf install -y jemalloc",
    "centos": "yum install -y epel-release && yum install -y jemalloc",
    "rhel": "yum install -y epel-release && yum install -y jemalloc",
    "fedora": "dnf install -y jemalloc",
}
_INSTALL_HELP = (
    "Install it:\n"
    "  Debian / Ubuntu:  apt-get install -y libjemalloc2\n"
    "  openEuler:        dnf install -y jemalloc\n"
    "  CentOS / RHEL 8+: yum install -y epel-release && yum install -y jemalloc\n"
    "  conda:            conda install -c conda-forge jemalloc\n"
    "  from source:      jemalloc 5.x, ./configure && make && make install (-> /usr/local/lib)\n"
    f"or set {JEMALLOC_PATH_ENV} to the path of libjemalloc.so.2."
)


class JemallocNotFoundError(RuntimeError):
    """No usable libjemalloc.so.2 on this host; the message lists what was searched and how to
    install it."""


def library_problem(path: str) -> str | None:
    """Why ``path`` cannot be preloaded into this interpreter's processes, or None if it can.

    Checks the file, its ELF header (64-bit, this host's CPU architecture) and that the path
    survives LD_PRELOAD's splitting: the dynamic loader would otherwise print "cannot be
    preloaded" in every process and carry on with glibc's malloc.
    """
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except FileNotFoundError:
        return "no such file"
    except IsADirectoryError:
        return "is a directory, not the library file"
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    if header[:4] != _ELF_MAGIC:
        return "not an ELF shared library"
    if len(header) < 20:
        return "truncated ELF file"
    if header[4] != _ELF_CLASS_64:
        return "not a 64-bit library"
    if re.search(r"[:\s]", path):
        return (
            "LD_PRELOAD splits entries at ':' and whitespace; use a path without them (a symlink)"
        )
    machine = platform.machine()
    expected = _ELF_MACHINES.get(machine)
    if expected is not None:
        found = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
        if found != expected:
            names = {v: k for k, v in _ELF_MACHINES.items()}
            built_for = names.get(found, f"ELF machine {found}")
            return f"built for {built_for}, but this host is {machine}"
    return None


def ldconfig_paths(ldconfig_output: str) -> list[str]:
    """Paths of libjemalloc.so.2 listed in ``ldconfig -p`` output, in cache order.

    A line reads ``\\tlibjemalloc.so.2 (libc6,x86-64) => /lib/x86_64-linux-gnu/libjemalloc.so.2``;
    entries for other architectures are filtered later by ``library_problem``.
    """
    paths = []
    for line in ldconfig_output.splitlines():
        name, arrow, path = line.partition("=>")
        if arrow and name.split()[:1] == [JEMALLOC_SONAME]:
            paths.append(path.strip())
    return paths


def _ldconfig_cache() -> list[str]:
    exe = shutil.which("ldconfig") or next(
        (p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.access(p, os.X_OK)), None
    )
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-p"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return ldconfig_paths(out.stdout)


def library_dirs(environ: Mapping[str, str]) -> list[str]:
    """Directories searched after the ldconfig cache, for hosts whose cache misses the library."""
    triplet = f"{platform.machine()}-linux-gnu"
    dirs = [f"/usr/lib/{triplet}", f"/lib/{triplet}", "/usr/lib64", "/lib64", "/usr/lib", "/lib"]
    dirs += ["/usr/local/lib", "/usr/local/lib64"]
    if environ.get("CONDA_PREFIX"):
        dirs.append(os.path.join(environ["CONDA_PREFIX"], "lib"))
    return dirs


def locate_library(candidates: Iterable[str]) -> str:
    """The first candidate that ``library_problem`` accepts.

    Raises ``JemallocNotFoundError`` naming the files that exist but were rejected (and why) and
    the install command for this distribution.
    """
    seen: set[str] = set()
    rejected = []
    for path in candidates:
        if path in seen:
            continue
        seen.add(path)
        problem = library_problem(path)
        if problem is None:
            return path
        if problem != "no such file":
            rejected.append(f"  {path}: {problem}")
    lines = [
        f"{JEMALLOC_SONAME} not found (searched the ldconfig cache and the usual directories)."
    ]
    if rejected:
        lines += ["Found but unusable:", *rejected]
    hint = install_command(_read_os_release())
    if hint:
        lines.append(f"On this host: {hint}")
    lines.append(_INSTALL_HELP)
    raise JemallocNotFoundError("\n".join(lines))


def find_jemalloc(environ: Mapping[str, str] | None = None) -> str:
    """Path of libjemalloc.so.2 for this host: ``$MINDSPEED_RL_JEMALLOC_PATH`` when set, else the
    ldconfig cache, else the usual library directories (see the module docstring).

    Raises ``ValueError`` when the override points at something unusable (the override is never
    silently ignored) and ``JemallocNotFoundError`` when the search finds nothing.
    """
    env = os.environ if environ is None else environ
    override = env.get(JEMALLOC_PATH_ENV, "")
    if override:
        problem = library_problem(override)
        if problem is None:
            return override
        try:
            found = locate_library(_default_candidates(env))
            fix = f"unset it to use {found}, found by the default search"
        except JemallocNotFoundError:
            fix = "point it at libjemalloc.so.2 (jemalloc 5.x) or unset it"
        raise ValueError(f"{JEMALLOC_PATH_ENV}={override!r}: {problem}; {fix}")
    return locate_library(_default_candidates(env))


def _default_candidates(env: Mapping[str, str]) -> list[str]:
    return _ldconfig_cache() + [os.path.join(d, JEMALLOC_SONAME) for d in library_dirs(env)]


def _read_os_release() -> str:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            return Path(path).read_text()
        except OSError:
            continue
    return ""


def install_command(os_release: str) -> str | None:
    """The command that installs jemalloc 5 on the distribution described by ``os_release`` (the
    text of /etc/os-release), looked up by ID then ID_LIKE; None when unknown."""
    fields = {}
    for line in os_release.splitlines():
        key, eq, value = line.partition("=")
        if eq:
            fields[key.strip()] = value.strip().strip("\"'").lower()
    for distro in [fields.get("ID", ""), *fields.get("ID_LIKE", "").split()]:
        if distro in _INSTALL_COMMANDS:
            return _INSTALL_COMMANDS[distro]
    return None


def merge_ld_preload(library: str, current: str) -> str:
    """``LD_PRELOAD`` with ``library`` first and the entries of ``current`` after it.

    Other preloads (on aarch64 often libgomp, against "cannot allocate memory in static TLS
    block") are kept; other copies of jemalloc are dropped since only one can serve malloc.
    The loader accepts ':' or spaces between entries; the result uses ':'.
    """
    kept = [
        entry
        for entry in re.split(r"[:\s]+", current)
        if entry and not os.path.basename(entry).startswith("libjemalloc")
    ]
    return ":".join([library, *kept])


def _malloc_conf(env: Mapping[str, str], malloc_conf: str | None) -> str:
    """The argument wins, then a MALLOC_CONF the user already exported, then the long-run default."""
    if malloc_conf is not None:
        return malloc_conf
    return env.get("MALLOC_CONF", LONG_RUN_MALLOC_CONF)


def preload_env(
    environ: Mapping[str, str] | None = None, malloc_conf: str | None = None
) -> dict[str, str]:
    """``LD_PRELOAD`` and ``MALLOC_CONF`` for child processes of a process with env ``environ``
    (default: this one's), e.g. the shell that runs a launch script.

    ``malloc_conf=None`` keeps an exported ``MALLOC_CONF`` and otherwise uses
    ``LONG_RUN_MALLOC_CONF``; ``""`` means jemalloc's built-in defaults.
    """
    env = os.environ if environ is None else environ
    library = find_jemalloc(env)
    return {
        "LD_PRELOAD": merge_ld_preload(library, env.get("LD_PRELOAD", "")),
        "MALLOC_CONF": _malloc_conf(env, malloc_conf),
    }


def ray_runtime_env_vars(
    environ: Mapping[str, str] | None = None, malloc_conf: str | None = None
) -> dict[str, str]:
    """``env_vars`` for a Ray ``runtime_env`` that start Ray workers with jemalloc as malloc.

    Use: ``ray.init(runtime_env={"env_vars": ray_runtime_env_vars()})`` or per actor. The
    library path is resolved on this (the driver's) host, so every node must have it at the same
    path, as with the code and weights. Ray expands ``${LD_PRELOAD}`` on each worker's node when
    it starts the worker, which keeps that node's own preloads.
    """
    env = os.environ if environ is None else environ
    return {
        "LD_PRELOAD": f"{find_jemalloc(env)}:${{LD_PRELOAD}}",
        "MALLOC_CONF": _malloc_conf(env, malloc_conf),
    }


def shell_exports(env_vars: Mapping[str, str]) -> str:
    """bash lines that export ``env_vars``, quoted so that ``eval`` reproduces them exactly."""
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env_vars.items())


def verify_preload(env_vars: Mapping[str, str], timeout_s: float = 60.0) -> None:
    """Start a Python child with ``env_vars`` and check that jemalloc serves its malloc.

    Catches what the file checks cannot: a library the loader refuses, a jemalloc built with a
    symbol prefix (it never replaces malloc), or a ``MALLOC_CONF`` that jemalloc rejects (it only
    prints ``<jemalloc>: Invalid conf pair`` and goes on). Raises ``ValueError`` for a rejected
    ``MALLOC_CONF`` and ``JemallocNotFoundError`` when jemalloc is not the child's allocator.
    """
    package_root = str(Path(__file__).resolve().parents[2])
    code = (
        f"import sys; sys.path.insert(0, {package_root!r}); "
        "from mindspeed_rl.platform.jemalloc import is_active; sys.exit(0 if is_active() else 3)"
    )
    try:
        child = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, **env_vars},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise JemallocNotFoundError(
            f"a Python child with LD_PRELOAD={env_vars.get('LD_PRELOAD', '')!r} did not finish "
            f"in {timeout_s:.0f} s"
        ) from err
    complaints = "\n".join(
        line for line in child.stderr.splitlines() if "jemalloc" in line or "ld.so" in line
    )
    if "<jemalloc>" in complaints:
        raise ValueError(
            f"MALLOC_CONF={env_vars.get('MALLOC_CONF', '')!r} rejected by jemalloc:\n{complaints}\n"
            "Use comma-separated option:value pairs from https://jemalloc.net/jemalloc.3.html"
        )
    if child.returncode != 0:
        detail = complaints or child.stderr.strip()[-2000:] or f"exit code {child.returncode}"
        raise JemallocNotFoundError(
            f"LD_PRELOAD={env_vars.get('LD_PRELOAD', '')!r} does not make jemalloc the malloc of "
            f"a new process: {detail}"
        )
