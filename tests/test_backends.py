"""Training under Keras' JAX backend beside TensorFlow: many processes against one, runs that
move between the backends, and the whole chain in an environment without TensorFlow.

Each backend runs in its own Python process (Keras picks its backend once per process). The
slow tests sit in classes of their own, so that `--dist loadscope` spreads them over the
workers."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from animetag.folders import SubsetFolder
from conftest import TEST_XLA_FLAGS

pytest.importorskip("jax")


JAX_PYTHON = os.path.abspath(os.environ["ANIMETAG_JAX_PYTHON"]) if os.environ.get("ANIMETAG_JAX_PYTHON") else None
# the Python that runs the JAX side of a test: the environment without TensorFlow where `make
# test` gives one (starting a JAX process there skips TensorFlow's import, 3 s of CPU, which
# keras.utils.set_random_seed makes wherever TensorFlow is installed), else this one
JAX_SIDE = JAX_PYTHON or sys.executable

# JAX's compilation cache, shared by every JAX process of the tests: the same tiny model's
# steps compile once (17 s for a one-epoch run cold, 6 s warm, on two cores)
JAX_CACHE = os.path.join(tempfile.gettempdir(), f"animetag-tests-jax-cache-{os.getuid()}")


def _env(backend: str, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "XLA_FLAGS"))}
    env.update(KERAS_BACKEND=backend, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
               XLA_FLAGS=TEST_XLA_FLAGS,
               JAX_COMPILATION_CACHE_DIR=JAX_CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", **extra)
    return env


def _train(python: str, backend: str, data, run, *args, timeout: int = 300) -> subprocess.Popen:
    cmd = [python, "-c", "import sys; from animetag.cli import main; sys.exit(main())", "train", "--data", str(data),
           "--run", str(run), "--profile", "tiny", "--batch-size", "16", *args]
    return subprocess.Popen(cmd, env=_env(backend), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(p: subprocess.Popen, timeout: int = 300) -> str:
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out[-3000:]
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


_READ = """
import json, sys
sys.modules["animetag"] = None  # model.keras first, with the package unimportable: Keras alone
import numpy as np, keras
score, paths, out = sys.argv[1], sys.argv[2:-1], sys.argv[-1]
result = {"checkpoints": []}
if score != "-":
    model_path, x_path = score.split(",")
    m = keras.saving.load_model(model_path)
    result["scores"] = np.asarray(m.predict(np.load(x_path), verbose=0)).tolist()
del sys.modules["animetag"]
import animetag.training.fit  # the training model's own classes, as a resume loads them
for path in paths:
    m = keras.saving.load_model(path)
    result["checkpoints"].append({
        "iterations": int(keras.ops.convert_to_numpy(m.optimizer.iterations)),
        "weights": {w.path: np.asarray(keras.ops.convert_to_numpy(w), np.float64).ravel().tolist() for w in m.weights},
        "optimizer": {v.path: np.asarray(keras.ops.convert_to_numpy(v), np.float64).ravel().tolist()
                      for v in m.optimizer.variables if "iteration" not in v.path}})
json.dump(result, open(out, "w"))
"""


def _read(python: str, backend: str, checkpoints: list[Path], tmp: Path, score: str = "-") -> dict:
    """In one process under `backend`: `score` ("model.keras,x.npy") scored with Keras alone,
    then each training checkpoint's iterations, weights and optimizer variables."""
    out = tmp / f"read-{backend}.json"
    r = subprocess.run([python, "-c", _READ, score, *map(str, checkpoints), str(out)], env=_env(backend),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text())


def _worst(a: dict, b: dict) -> float:
    """The largest difference between matching arrays, relative to the array's scale."""
    assert a.keys() == b.keys()
    worst = 0.0
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        worst = max(worst, float(np.abs(x - y).max() / max(np.abs(x).max(), 1e-3)) if x.size else 0.0)
    return worst


@pytest.mark.slow(seconds=90)
class TestProcesses:
    def test_two_processes_train_the_weights_one_process_trains(self, subset_dir, tmp_path):
        """`animetag train` in 2 processes on localhost (JAX's CPU collectives) against 1 process
        reading the same 2 shares of the shards (the same global batches): after an epoch the
        weights, BatchNorm statistics and AdamW moments agree to 1e-4 of each array's scale
        (measured: about 2e-6); the 2-process run then resumes to a second epoch."""
        py = JAX_SIDE
        _finish(_train(py, "jax", subset_dir, tmp_path / "one", "--epochs", "1", "--set", "input_shares=2"))

        def two(epochs: int) -> list[str]:
            common = ["--epochs", str(epochs), "--coordinator", f"localhost:{_free_port()}", "--num-processes", "2"]
            procs = [_train(py, "jax", subset_dir, tmp_path / "two", *common, "--process-id", str(i)) for i in (1, 0)]
            return [_finish(p) for p in procs]

        outs = two(1)
        assert '"process_id": 1' in outs[0] and '"val_f1_micro"' in outs[1]  # process 0 reports the run
        config = json.loads((tmp_path / "two" / "config.json").read_text())
        assert config["runtime"]["processes"] == 2 and config["runtime"]["replicas"] == 2
        h1 = (tmp_path / "one" / "history.csv").read_text().splitlines()
        h2 = (tmp_path / "two" / "history.csv").read_text().splitlines()
        assert h1[0] == h2[0] and len(h2) == 2  # one writer: one row per epoch
        first = tmp_path / "two-epoch1.keras"
        first.write_bytes((tmp_path / "two" / "checkpoints" / "last.keras").read_bytes())
        # a second epoch: both processes resume from the checkpoint process 0 wrote
        outs = two(2)
        assert '"resumed_from_epoch": 1' in outs[1]
        a, b, again = _read(py, "jax", [tmp_path / "one" / "checkpoints" / "last.keras", first,
                                        tmp_path / "two" / "checkpoints" / "last.keras"], tmp_path)["checkpoints"]
        steps = a["iterations"]
        assert steps > 3 and b["iterations"] == steps and again["iterations"] == 2 * steps
        assert any("moving_mean" in k for k in a["weights"])
        assert _worst(a["weights"], b["weights"]) < 1e-4 and _worst(a["optimizer"], b["optimizer"]) < 1e-4


def test_several_processes_are_refused_where_they_cannot_run(subset_dir, tmp_path):
    from animetag.training.runtime import process_settings

    with pytest.raises(ValueError, match="--process-id"):
        process_settings("localhost:1234", 2, None)
    with pytest.raises(ValueError, match="HOST:PORT"):
        process_settings("localhost", 2, 0)
    with pytest.raises(ValueError, match="not within 0 to 1"):
        process_settings("localhost:1234", 2, 2)
    assert process_settings(None, None, None) is None
    p = _train(sys.executable, "tensorflow", subset_dir, tmp_path / "r", "--epochs", "1",
               "--coordinator", "localhost:1", "--num-processes", "2", "--process-id", "0")
    out, _ = p.communicate(timeout=120)
    assert p.returncode != 0 and "KERAS_BACKEND=jax" in out and not (tmp_path / "r").exists()


@pytest.mark.slow(seconds=60)
class TestMoves:
    def test_a_run_moves_between_backends(self, subset_dir, tmp_path):
        """Trained one epoch under TensorFlow, the run resumes under JAX to epoch 2 and under
        TensorFlow again to epoch 3. Each move's checkpoint reads back under both backends with
        the same iterations, weights, BatchNorm statistics and optimizer variables, and
        model.keras gives the same scores under both backends, loaded with Keras alone."""
        py = {"tensorflow": sys.executable, "jax": JAX_SIDE}
        run = tmp_path / "run"
        saved = []
        for epoch, backend in ((1, "tensorflow"), (2, "jax"), (3, "tensorflow")):
            out = _finish(_train(py[backend], backend, subset_dir, run, "--epochs", str(epoch)))
            assert f'"resumed_from_epoch": {epoch - 1}' in out and f'"epochs_done": {epoch}' in out
            if epoch < 3:
                saved.append(tmp_path / f"epoch{epoch}.keras")
                saved[-1].write_bytes((run / "checkpoints" / "last.keras").read_bytes())
        config = json.loads((run / "config.json").read_text())
        assert config["runtime"]["backend"] == "tensorflow"  # the run's record of its start
        with zipfile.ZipFile(run / "model.keras") as z:
            assert "animetag" not in z.read("config.json").decode()  # stock Keras layers only
        np.save(tmp_path / "x.npy", np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("float32"))
        score = f"{run / 'model.keras'},{tmp_path / 'x.npy'}"
        tf_side, jax_side = (_read(py[b], b, saved, tmp_path, score) for b in ("tensorflow", "jax"))
        steps = tf_side["checkpoints"][0]["iterations"]
        for epoch, (here, there) in enumerate(zip(tf_side["checkpoints"], jax_side["checkpoints"]), start=1):
            assert here["iterations"] == there["iterations"] == epoch * steps > 0
            assert _worst(here["weights"], there["weights"]) == 0
            assert _worst(here["optimizer"], there["optimizer"]) == 0
        s_tf, s_jax = np.asarray(tf_side["scores"]), np.asarray(jax_side["scores"])
        assert s_tf.shape == (4, SubsetFolder(subset_dir).n_outputs) and np.abs(s_tf - s_jax).max() < 1e-4


@pytest.mark.slow(seconds=70)
@pytest.mark.skipif(not JAX_PYTHON, reason="ANIMETAG_JAX_PYTHON (an environment with Keras and JAX and no "
                                           "TensorFlow; `make test` makes one) is not set")
class TestWithoutTensorFlow:
    def test_the_chain_runs_under_jax_where_tensorflow_is_not_installed(self, tmp_path):
        """sample -> subset -> train -> evaluate -> tag with Keras on JAX in an environment where
        `import tensorflow` fails and nothing names the backend (export refused in one line).
        Then the same subset trained under TensorFlow here: the JAX run's validation F1-micro is
        not below the TensorFlow run's, the paired bootstrap interval of (JAX - TensorFlow)
        reaching 0 or above. (Equality is not the test: two TensorFlow runs with seeds 0 and 1
        already differ by [0.005, 0.029] on this paired interval, since their initial weights
        differ.) Last, the JAX run exported under TensorFlow is compared with the run itself
        under JAX (`compare`): their F1 agree."""
        env = _env("jax")
        del env["KERAS_BACKEND"]  # nothing names the backend: without TensorFlow, animetag picks JAX

        def cli(*args, timeout=600, unreadable=0, status=0):
            r = subprocess.run([JAX_PYTHON, "-c", "import sys; from animetag.cli import main; sys.exit(main())", *args],
                               env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
            # `tag` exits 1 when it names unreadable images (the sample has a truncated one)
            ok = r.returncode == status or (unreadable and f"{unreadable} unreadable" in r.stdout + r.stderr)
            assert ok, (args[0], r.stdout[-2000:], r.stderr[-3000:])
            return r.stdout + r.stderr if status else r.stdout

        probe = subprocess.run([JAX_PYTHON, "-c", "import tensorflow"], capture_output=True, text=True)
        assert probe.returncode != 0 and "No module named 'tensorflow'" in probe.stderr
        cli("sample", "sample", "--images", "400")
        cli("subset", "--metadata", "sample/metadata/posts.json", "--images-root", "sample", "--out", "subset",
            "--profile", "tiny")
        assert sorted(p.name for p in (tmp_path / "subset" / "shards").iterdir())[0].endswith(".tfrecord")
        out = cli("train", "--data", "subset", "--run", "jax-run", "--profile", "tiny")
        summary = json.loads(out[out.rfind("\n{") + 1:])  # after Keras' progress lines
        assert summary["epochs_done"] == 3
        config = json.loads((tmp_path / "jax-run" / "config.json").read_text())
        assert config["runtime"]["backend"] == "jax" and "tensorflow" not in config["runtime"]
        assert not (tmp_path / "jax-run" / "logs").exists()  # TensorBoard's writer needs TensorFlow
        cli("evaluate", "--data", "subset", "--run", "jax-run", "--bootstrap", "50")
        assert (tmp_path / "jax-run" / "thresholds.json").exists()
        cli("tag", "--run", "jax-run", "sample/512px", "--format", "json", "--out", "tagged", unreadable=1)
        (doc,) = [json.loads(p.read_text()) for p in (tmp_path / "tagged").rglob("*.json")]
        assert len(doc["images"]) > 300 and all(im["tags"] or im["rating"] for im in doc["images"])
        assert "corrupt_image" in json.dumps(doc)  # the truncated one, named with its reason
        # exporting needs TensorFlow: one line says so, and nothing is written
        err = cli("export", "--run", "jax-run", "--out", "export", status=2).strip()
        assert err.count("\n") == 0 and "needs Keras on TensorFlow" in err and "runs Keras on jax" in err, err
        assert not (tmp_path / "export").exists() and not (tmp_path / "export.partial").exists()

        # the same subset under TensorFlow, in this environment
        from animetag.evaluation.evaluate import predict_split
        from animetag.metrics import paired_bootstrap_diff
        from animetag.training.fit import train

        train(tmp_path / "subset", tmp_path / "tf-run", profile="tiny", verbose=0)
        ids_j, y, s_jax = predict_split(tmp_path / "subset", tmp_path / "jax-run", "val")
        ids_t, y_t, s_tf = predict_split(tmp_path / "subset", tmp_path / "tf-run", "val")
        order_j, order_t = np.argsort(ids_j), np.argsort(ids_t)
        y, s_jax, s_tf = y[order_j], s_jax[order_j], s_tf[order_t]
        assert (y == y_t[order_t]).all()
        diff = paired_bootstrap_diff(y, s_tf >= 0.3, s_jax >= 0.3, n_boot=1000)["f1_micro"]
        assert diff[1] <= diff[0] <= diff[2] and diff[2] >= 0, diff
        print("val F1-micro, JAX minus TensorFlow (point, 95% interval):", diff)

        # the JAX run exported here under TensorFlow, and compared with it back under JAX: the
        # export's scores are the run's own (the comparison's difference near 0)
        from animetag.evaluation.compare import stand_in_taggers

        specs = stand_in_taggers(tmp_path / "jax-run", tmp_path / "stand-ins")
        cli("compare", "--run", "jax-run", "--data", "subset", *[a for t in specs for a in ("--tagger", t)],
            "--out", "compared", "--bootstrap", "50")
        result = json.loads((tmp_path / "compared" / "compare.json").read_text())
        assert [t["name"] for t in result["taggers"]] == ["export-448", "general-only"]
        for t in result["taggers"]:
            point = t["tagger"]["global_threshold"]["minus_run"]["f1_micro"][0]
            assert abs(point) < 0.01, (t["name"], point)
