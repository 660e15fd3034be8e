#!/usr/bin/env bash
# Installs the PyTorch peer used by scripts/peer_bench.py: a venv at .cache/peer-venv (gitignored)
# with torch and transformers from the default package index. PyTorch is a peer for benchmarks,
# never a dependency of Condenser. Idempotent: does nothing when both already import.
#
# The default index's Linux x86_64 torch wheel is built against CUDA and will not import
# without its CUDA library packages (a `--no-deps` install fails at `import torch`), so the
# whole set is installed: about 5.6 GB in the venv. It runs on the CPU all the same.
#
#   bash scripts/peer-setup.sh            # PYTHON=python3.11 to pick the interpreter
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.cache/peer-venv"
py="${PYTHON:-python3}"

check() {
  "$venv/bin/python" -c 'import torch, transformers, PIL; print(f"torch {torch.__version__}, transformers {transformers.__version__}")' 2>/dev/null
}

if [ -x "$venv/bin/python" ] && versions="$(check)"; then
  echo "peer-setup: already installed in .cache/peer-venv ($versions)"
  exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "peer-setup: creating the venv .cache/peer-venv with $py"
  mkdir -p "$root/.cache"
  if ! "$py" -m venv "$venv"; then
    echo "peer-setup: '$py -m venv' failed (on Debian: apt-get install python3-venv)" >&2
    exit 1
  fi
fi

echo "peer-setup: installing torch and transformers (several GB; this takes a while)"
"$venv/bin/python" -m pip install --disable-pip-version-check -q torch transformers pillow

if versions="$(check)"; then
  echo "peer-setup: done ($versions); run: python3 scripts/peer_bench.py SHAPES.json"
else
  echo "peer-setup: torch or transformers still does not import from .cache/peer-venv" >&2
  "$venv/bin/python" -c 'import torch, transformers' >&2 || true
  exit 1
fi
