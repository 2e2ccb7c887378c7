"""Peak memory of streaming a large Danbooru metadata file (JSON lines), against its size.

Writes a file of at least --gb gigabytes by repeating the sample's records under new ids,
then loads it in child processes (so each peak is its own): once keeping every tag
category, once keeping only general tags. Prints one JSON object.

    python benchmarks/stream_metadata.py --gb 1.0 --work /tmp/animetag-bench
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CHILD = """
import json, resource, sys, time
from animetag.data.danbooru import load_posts
t = time.time()
df, rep = load_posts(sys.argv[1], categories=sys.argv[2].split(","))
print(json.dumps({"records": len(df), "malformed": len(rep.malformed), "seconds": time.time() - t,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "table_mb": float(df.memory_usage(deep=True).sum()) / 1e6}))
"""


def make_file(path: Path, gb: float) -> int:
    from animetag.data.sample import generate

    seed_dir = path.parent / "seed-sample"
    if not (seed_dir / "metadata" / "posts.json").exists():
        generate(seed_dir, 400, seed=0, clean=True)
    records = [json.loads(x) for x in (seed_dir / "metadata" / "posts.json").read_text().splitlines()]
    target = int(gb * 1e9)
    size, n = 0, 0
    with open(path, "w") as f:
        while size < target:
            for r in records:
                r = dict(r, id=10_000_000 + n)
                line = json.dumps(r) + "\n"
                f.write(line)
                size += len(line)
                n += 1
    return n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--work", default="build/bench")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"posts-{a.gb:g}gb.json"
    if not path.exists():
        t = time.time()
        make_file(path, a.gb)
        print(f"wrote {path} in {time.time() - t:.0f} s", file=sys.stderr)
    out = {"file_mb": path.stat().st_size / 1e6}
    for label, cats in (("all_categories", "general,character,copyright,artist,meta"), ("general_only", "general")):
        r = subprocess.run([sys.executable, "-c", CHILD, str(path), cats], capture_output=True, text=True, check=True)
        res = json.loads(r.stdout)
        res["records_per_s"] = res["records"] / res["seconds"]
        res["peak_rss_over_file"] = res["peak_rss_mb"] / out["file_mb"]
        out[label] = {k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()}
    out["peak_general_over_all"] = round(out["general_only"]["peak_rss_mb"] / out["all_categories"]["peak_rss_mb"], 3)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
