"""Execute the notebooks in order and save the executed copies (used by `make demo`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("notebooks", nargs="+")
    ap.add_argument("--out", required=True, help="folder for the executed notebooks")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in map(Path, a.notebooks):
        t = time.time()
        print(f"running {path} ...", flush=True)
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(nb, timeout=a.timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        try:
            client.execute()
        finally:
            nbformat.write(nb, out / path.name)
        print(f"  done in {time.time() - t:.0f} s -> {out / path.name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
