import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The tests' models are tiny and two test workers share the cores: XLA compiles without its
# backend optimizations (a third less CPU for a JAX training of the tiny profile, the same
# scores), and TensorFlow runs each op on one thread. Set before TensorFlow or JAX starts, and
# inherited by every process a test starts (`make test` sets the same for its notebooks).
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
os.environ.setdefault("XLA_FLAGS", TEST_XLA_FLAGS)
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory):
    """A small sample with every kind of broken record (generated once per session)."""
    from animetag.data.sample import generate

    root = tmp_path_factory.mktemp("sample") / "sample"
    generate(root, n_images=240, seed=1)
    return root


@pytest.fixture(scope="session")
def subset_dir(sample_root, tmp_path_factory):
    """The sample's subset at 32 px with the top-40 tags."""
    from animetag.config import SubsetConfig
    from animetag.data.subset import build_subset

    out = tmp_path_factory.mktemp("subset") / "subset"
    build_subset(sample_root / "metadata" / "posts.json", sample_root, out,
                 SubsetConfig(top_k=40, image_size=32, images_per_shard=64, workers=2), progress=False)
    return out


def evaluated_run(sample_root, root, n_boot: int = 50):
    """In `root`: the sample's subset with general and character tags (`subset/`), a run
    trained on it two epochs (`run/`), evaluated (its thresholds.json), and exported in the
    WD layout (`wd/`). Returns `root`."""
    import keras

    from animetag.config import SubsetConfig
    from animetag.data.subset import build_subset
    from animetag.evaluation.evaluate import evaluate
    from animetag.tagging.export import export_run
    from animetag.training.fit import train

    build_subset(sample_root / "metadata" / "posts.json", sample_root, root / "subset",
                 SubsetConfig(top_k=20, top_k_character=5, image_size=32, images_per_shard=64, workers=2),
                 progress=False)
    keras.utils.set_random_seed(0)
    train(root / "subset", root / "run", profile="tiny", epochs=2, batch_size=16, verbose=0)
    evaluate(root / "subset", root / "run", n_boot=n_boot)
    export_run(root / "run", root / "wd")
    return root


def write_tar(path, members: list[tuple[str, bytes]]):
    """An uncompressed tar archive holding `members` (name, bytes), in order."""
    import io
    import tarfile
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_subset(out, sizes: dict, image_size: int = 16, n_tags: int = 5, seed: int = 0):
    """A minimal subset with exact split sizes (random JPEGs, random labels whose rate depends
    on the image's brightness, so there is something to learn), written by the subset
    builder's own writer (`subset.write_subset_files`), with its settings as subset.json
    records them."""
    import io
    from collections import Counter
    from pathlib import Path

    import numpy as np
    import pandas as pd
    from PIL import Image

    from animetag.config import SubsetConfig, to_dict
    from animetag.data.subset import SubsetRow, write_subset_files
    from animetag.folders import write_json_atomic

    out = Path(out)
    out.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    names = [f"tag_{j}" for j in range(n_tags)]
    rows, pid = [], 1
    for split, n in sizes.items():
        for _ in range(n):
            level = rng.uniform(0, 1)
            img = (rng.uniform(0, 255 * level, size=(image_size, image_size, 3))).astype("uint8")
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=95)
            labels = [j for j in range(n_tags) if rng.uniform() < 0.15 + 0.6 * level * (j % 2)]
            rows.append(SubsetRow(pid, f"{pid:032x}", split, f"{pid}.jpg", "", buf.getvalue(), labels))
            pid += 1
    counts = [sum(j in r.labels for r in rows) for j in range(n_tags)]
    vocab = pd.DataFrame({"tag_id": range(n_tags), "name": names, "category": 0, "count": counts})
    per_shard = max(1, min(sizes.values()) // 2)
    write_subset_files(out, rows, vocab, Counter(r.split for r in rows), per_shard)
    settings = to_dict(SubsetConfig(top_k=n_tags, image_size=image_size, rating_outputs=False,
                                    images_per_shard=per_shard))
    write_json_atomic(out / "subset.json", {"settings": settings, "counts": {"kept": len(rows), **sizes},
                                            "images_root": str(out), "n_tags": n_tags, "n_ratings": 0})
    return out


# What a user without the package has: Keras alone, in a process where any import of animetag
# fails. One such process per test worker answers every test that loads a model.keras there
# (starting Python with Keras costs about 6 s of CPU on two cores; a load, well under 1).
_KERAS_ALONE = r"""
import json, sys, traceback
sys.modules["animetag"] = None  # any attempt to import the package fails
import numpy as np, keras
for line in sys.stdin:
    req = json.loads(line)
    try:
        m = keras.saving.load_model(req["model"])
        reply = {"optimizer": getattr(m, "optimizer", None) is not None,
                 "dtypes": sorted({str(w.dtype) for w in m.weights}), "output_shape": list(m.output_shape),
                 "layers": {l.name: type(l).__name__ for l in m.layers}}
        if req.get("x"):
            np.save(req["out"], np.asarray(m.predict(np.load(req["x"]), verbose=0)))
    except Exception:
        reply = {"error": traceback.format_exc()[-3000:]}
    reply["animetag_imported"] = any(k.startswith("animetag.") for k in sys.modules)
    print("REPLY " + json.dumps(reply), flush=True)
"""


class KerasAlone:
    """`load(model_path, x=None)`: what Keras alone makes of a model.keras in that process: a
    dict with `optimizer` (whether it carries one), `dtypes` (of its weights), `output_shape`,
    `layers` (name: class) and, given an array `x`, `scores` (its predictions); with `error`
    (the traceback) instead when loading failed."""

    def __init__(self, workdir):
        import subprocess
        import sys
        from pathlib import Path

        self.dir = Path(workdir)
        self.log = open(self.dir / "keras-alone.log", "w")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        self.proc = subprocess.Popen([sys.executable, "-c", _KERAS_ALONE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        self.n = 0

    def load(self, model_path, x=None) -> dict:
        import json

        import numpy as np

        self.n += 1
        req = {"model": str(model_path)}
        if x is not None:
            req.update(x=str(self.dir / f"x{self.n}.npy"), out=str(self.dir / f"scores{self.n}.npy"))
            np.save(req["x"], x)
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith("REPLY "):
                reply = json.loads(line[len("REPLY "):])
                assert not reply["animetag_imported"]
                if x is not None and "error" not in reply:
                    reply["scores"] = np.load(req["out"])
                return reply
        raise RuntimeError(f"the Keras-alone process ended: {(self.dir / 'keras-alone.log').read_text()[-3000:]}")

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.log.close()


@pytest.fixture(scope="session")
def keras_alone(tmp_path_factory):
    """A process with Keras and no animetag that loads model.keras files (see KerasAlone)."""
    k = KerasAlone(tmp_path_factory.mktemp("keras-alone"))
    yield k
    k.close()


def pytest_collection_modifyitems(config, items):
    """The scopes (a module, or a class in one) with the most slow work run first, the quick
    ones last. `make test` spreads scopes over two workers (`--dist loadscope`), each taking
    the next scope as it finishes one: so the run ends on short scopes, not with one worker
    idle while the other trains. A slow test counts 10 s, or what its marker says
    (`@pytest.mark.slow(seconds=60)`)."""
    def scope(item):
        return item.nodeid.rsplit("::", 1)[0] if item.cls is not None else item.nodeid.split("::", 1)[0]

    work = {}
    for item in items:
        mark = item.get_closest_marker("slow")
        work[scope(item)] = work.get(scope(item), 0) + (mark.kwargs.get("seconds", 10) if mark else 0)
    items.sort(key=lambda item: -work[scope(item)])  # stable: the order within a scope stays
