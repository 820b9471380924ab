#!/usr/bin/env bash
# Creates (or reuses) the local virtual environment .venv and installs openjepa into it.
#
# Why the explicit torch step: a bare `torch` requirement on a machine without torch pulls a
# multi-GB CUDA build from PyPI. When torch is missing we install the pinned CPU-friendly
# torch==2.13.0 first; pyproject keeps `torch>=2.4`, so GPU users with their own build keep it.
# Set OPENJEPA_TORCH to another requirement (e.g. "torch==2.5.1") to override.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${OPENJEPA_VENV:-.venv}
EXTRAS=${1:-dev}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
"$VPY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  echo "[bootstrap] torch missing: installing ${OPENJEPA_TORCH:-torch==2.13.0}"
  "$VPY" -m pip install -q "${OPENJEPA_TORCH:-torch==2.13.0}"
fi
stamp="$VENV/.openjepa-installed-$EXTRAS"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[bootstrap] installing openjepa[$EXTRAS] (editable)"
  "$VPY" -m pip install -q -e ".[$EXTRAS]"
  touch "$stamp"
fi
