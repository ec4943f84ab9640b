"""End-to-end extraction speed on a CPU-only machine: the offline preset's backbone
(EfficientNet-Lite0), image files on disk -> embeddings in the cache.

    python benchmarks/extract_cpu.py                         # 240 images, each run timed twice: ~8 minutes on 2 cores
    python benchmarks/extract_cpu.py --images 100 --out bench-out/extract_cpu.json

The same benchmark as extract_gpu.py (same test files, same reference configuration: PIL +
torchvision transforms, fp32, batch 32, one loader worker as on a CPU extraction), with the CPU's
speed options: ``FAST`` resolves to torchvision decoding beside the model ("device") and ONNX
Runtime. Variants change one option each, to show what each contributes.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from extract_gpu import main  # noqa: E402

CPU_DEFAULTS = dict(model="efficientnet-lite0", images=240, seconds=900.0, repeat=2)
VARIANTS = (
    "precision=fp32,decode=exact,compile=false,engine=torch,batch_size=32",  # the exact path
    "decode=exact",  # exact PIL decoding, ONNX Runtime
    "decode=fast",  # PIL DCT-scaled decoding in a worker process, ONNX Runtime
    "decode=fast,num_workers=2",  # the same in two worker processes
    "engine=torch",  # device decoding, PyTorch fp32 eager
)

if __name__ == "__main__":
    sys.exit(0 if "ratio" in main(defaults=CPU_DEFAULTS, before=(), variants=VARIANTS) else 1)
