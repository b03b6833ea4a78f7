#!/usr/bin/env bash
# Builds .bench/kraken-venv: Kraken 7.1.1 on the CPU build of torch 2.13.0, apart from the project's
# own environment, for benchmarks/kraken_speed.py. Re-running when the venv is complete does nothing.
#
#   bash benchmarks/kraken_env.sh          # then: .bench/kraken-venv/bin/python benchmarks/kraken_speed.py ...
#
# torch goes in first, as the local CPU wheel only (torch==2.13.0+cpu, found through pip's find-links):
# PyPI's torch 2.13.0 is a multi-GB CUDA build and must never be pulled in. Kraken 7.1.1 asks for
# torch>=2.9.0,<=2.14, which 2.13.0+cpu satisfies, so Kraken installs with its own dependencies under a
# constraints file that pins torch and torchvision. torchvision has no CPU wheel on PyPI: 0.28.0 (the
# release for torch 2.13) is installed and its compiled ops (built against CUDA torch) stay unloadable;
# kraken_speed.py makes the pure-Python transforms importable without them (see its docstring).
set -euo pipefail

TORCH="2.13.0+cpu"
TORCHVISION="0.28.0"
KRAKEN="7.1.1"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/.bench"
VENV="$BENCH/kraken-venv"
LOG="$BENCH/kraken-env.log"
STAMP="$VENV/.kraken-env-complete"
WANT="kraken=$KRAKEN torch=$TORCH torchvision=$TORCHVISION"

fail() {
    echo "kraken_env.sh: $1" >&2
    if [[ -s "$LOG" ]]; then
        echo "--- last lines of $LOG ---" >&2
        tail -n 15 "$LOG" >&2
    fi
    exit 1
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -x "$VENV/bin/python" ]]; then
    exit 0
fi

mkdir -p "$BENCH"
: > "$LOG"
command -v python3 > /dev/null || fail "python3 not found"
if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV" >> "$LOG" 2>&1 || fail "python3 -m venv $VENV failed"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

echo "kraken_env.sh: building $VENV ($WANT), log in $LOG"
"${PIP[@]}" install -q --only-binary torch "torch==$TORCH" >> "$LOG" 2>&1 \
    || fail "the CPU wheel torch==$TORCH was not found (pip find-links, e.g. /opt/wheels); refusing to install PyPI's CUDA build"

CONSTRAINTS="$BENCH/kraken-constraints.txt"
printf 'torch==%s\ntorchvision==%s\n' "$TORCH" "$TORCHVISION" > "$CONSTRAINTS"
"${PIP[@]}" install -q -c "$CONSTRAINTS" "torchvision==$TORCHVISION" "kraken==$KRAKEN" >> "$LOG" 2>&1 \
    || fail "installing kraken==$KRAKEN failed"

got_torch="$("$PY" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>> "$LOG")" \
    || fail "torch does not import in $VENV"
[[ "$got_torch" == "$TORCH" ]] || fail "expected torch $TORCH in $VENV, found $got_torch"
installed="$("${PIP[@]}" list --format=freeze 2>> "$LOG")" || fail "pip list failed in $VENV"
if grep -qi '^nvidia-' <<< "$installed"; then
    fail "CUDA packages (nvidia-*) ended up in $VENV; remove it and check the torch pin"
fi
"$PY" "$ROOT/benchmarks/kraken_speed.py" --check >> "$LOG" 2>&1 || fail "kraken does not import in $VENV"

echo "$WANT" > "$STAMP"
echo "kraken_env.sh: ready: $("$PY" "$ROOT/benchmarks/kraken_speed.py" --check 2> /dev/null)"
