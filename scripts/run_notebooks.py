"""Execute the notebooks in order and save the executed copies (used by `make demo`)."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

# What must not reach a reader: TensorFlow's C++ log lines and bare Path reprs.
UNWANTED = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:|absl::InitializeLog|PosixPath\(|WindowsPath\(")


def unwanted_output(nb) -> list[str]:
    """`cell N: line` for every output line a reader should not see."""
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            text = out.get("text", "") + out.get("data", {}).get("text/plain", "")
            found += [f"cell {i}: {line[:160]}" for line in text.splitlines() if UNWANTED.search(line)]
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("notebooks", nargs="+")
    ap.add_argument("--out", required=True, help="folder for the executed notebooks")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    ap.add_argument("--strict", action="store_true",
                    help="fail when an output holds a line a reader should not see (the tests' check; the demo "
                         "only reports such lines)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = False
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
        noise = unwanted_output(nb)
        if noise:
            print(f"{path.name}: {'error' if a.strict else 'note'}: output a reader should not see (log lines or "
                  "Path reprs):\n  " + "\n  ".join(noise), file=sys.stderr)
            failed = failed or a.strict
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
