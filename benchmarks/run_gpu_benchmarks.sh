#!/usr/bin/env bash
# The GPU extraction benchmark as one command (see benchmarks/extract_gpu.py for what it measures).
#
#   bash benchmarks/run_gpu_benchmarks.sh                 # ~3-4 minutes on one H200
#   bash benchmarks/run_gpu_benchmarks.sh --images 1000   # extra arguments go to extract_gpu.py
#
# Needs python with torch (CUDA), torchvision, timm, pillow, numpy and pandas; wildreid itself is
# taken from this checkout's src/ (no install). Writes extract_gpu.json (rewritten after every
# stage, so a run cut short keeps what it measured) and extract_gpu.log to $OUT, or bench-out/.
# Environment: OUT, BUDGET_S (time budget of the benchmark, default 200), HARD_LIMIT_S (kill
# after, default 270), IMAGES (default 4000), PYTHON (default: the first python with torch).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-bench-out}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for candidate in .venv/bin/python python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import torch" >/dev/null 2>&1; then
      PY="$candidate"
      break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "no python with torch found (set PYTHON)" | tee "$OUT_DIR/extract_gpu.log"
  exit 1
fi

{
  echo "== wildreid GPU extraction benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs"
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not available"
  "$PY" - <<'PYTHON'
import importlib
import torch
print("python", __import__("sys").version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| GPU:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
missing = []
for name in ("torchvision", "timm", "PIL", "numpy", "pandas", "tqdm"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "?"))
    except ImportError:
        missing.append(name)
print("missing modules:", ", ".join(missing) or "none", "(tqdm is optional)")
PYTHON
  timeout -k 10 "${HARD_LIMIT_S:-270}" "$PY" benchmarks/extract_gpu.py --seconds "${BUDGET_S:-200}" \
    --images "${IMAGES:-4000}" --out "$OUT_DIR/extract_gpu.json" "$@"
  status=$?
  echo "== exit status $status (124: cut at HARD_LIMIT_S; partial results are in extract_gpu.json)"
  exit $status
} 2>&1 | tee "$OUT_DIR/extract_gpu.log"
exit "${PIPESTATUS[0]}"
