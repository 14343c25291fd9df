# Sourced by the example scripts (not run): chooses the Python interpreter and exports PYTHON.
#
# Order: $PYTHON when set (it must have the dependencies); else an active virtualenv
# ($VIRTUAL_ENV/bin/python), the repository's .venv/bin/python (what `make venv` / `make demo`
# create), then python3 / python from PATH -- the first of these that has the project's
# dependencies. None: one line saying what to do, exit 2. Also puts the repository on PYTHONPATH.
# Needs ROOT (the repository root) set by the caller.

# the install_requires of setup.py, as import names; find_spec imports none of them (fast)
_MSRL_DEPS="torch megatron.core transformers safetensors ray yaml numpy pyarrow tensordict omegaconf pydantic"

_msrl_missing() {  # prints the first missing module of interpreter $1; fails if $1 cannot run
    "$1" - $_MSRL_DEPS 2>/dev/null <<'PY'
import importlib.util, sys
def absent(name):
    try:
        return importlib.util.find_spec(name) is None
    except ImportError:  # the parent package (megatron of megatron.core) is missing
        return True
missing = [m for m in sys.argv[1:] if absent(m)]
print(missing[0] if missing else "")
PY
}

_msrl_pick_python() {
    local candidate missing
    if [[ -n "${PYTHON:-}" ]]; then
        if ! missing=$(_msrl_missing "${PYTHON}"); then
            echo "error: PYTHON=${PYTHON} cannot be run; set PYTHON to an interpreter with mindspeed-rl's dependencies, or unset it to use ${ROOT}/.venv (make venv)" >&2
            return 2
        fi
        if [[ -n "${missing}" ]]; then
            echo "error: PYTHON=${PYTHON} has no module '${missing}'; install the project there (docs/install.md), or unset PYTHON to use ${ROOT}/.venv (make venv)" >&2
            return 2
        fi
        return 0
    fi
    for candidate in ${VIRTUAL_ENV:+"${VIRTUAL_ENV}/bin/python"} "${ROOT}/.venv/bin/python" python3 python; do
        if [[ "${candidate}" == */* && ! -x "${candidate}" ]]; then continue; fi
        if ! command -v "${candidate}" >/dev/null 2>&1; then continue; fi
        if missing=$(_msrl_missing "${candidate}") && [[ -z "${missing}" ]]; then
            PYTHON="${candidate}"
            return 0
        fi
    done
    echo "error: no Python with mindspeed-rl's dependencies (tried ${VIRTUAL_ENV:+\$VIRTUAL_ENV, }${ROOT}/.venv, python3, python): run \`make venv\` in ${ROOT}, or set PYTHON=/path/to/python (docs/install.md)" >&2
    return 2
}

_msrl_pick_python || exit $?
export PYTHON
export PYTHONPATH="${ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
