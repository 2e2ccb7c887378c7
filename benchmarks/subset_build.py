"""Time, images per second and peak memory of a subset build on a generated sample.

    python benchmarks/subset_build.py --images 3000 --size 256 --work /tmp/animetag-bench
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--work", default="build/bench")
    ap.add_argument("--workers", type=int, default=0)
    a = ap.parse_args()
    from animetag.config import SubsetConfig
    from animetag.data.sample import generate
    from animetag.data.subset import build_subset

    work = Path(a.work)
    sample = work / f"sample-{a.images}"
    if not (sample / "sample.json").exists():
        generate(sample, a.images, seed=0)
    out = work / f"subset-{a.images}-{a.size}"
    if out.exists():
        shutil.rmtree(out)
    t = time.time()
    s = build_subset(sample / "metadata" / "posts.json", sample, out,
                     SubsetConfig(image_size=a.size, workers=a.workers), progress=False)
    wall = time.time() - t
    print(json.dumps({
        "images_kept": s["counts"]["kept"], "image_size": a.size, "seconds": round(wall, 2),
        "images_per_s": round(s["counts"]["kept"] / wall, 1),
        "peak_rss_main_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_largest_worker_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "shards_mb": round(sum(f.stat().st_size for f in (out / "shards").glob("*")) / 1e6, 1),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
