"""Nothing lost, nothing silently wrong: evaluation bound to the run's data, --overwrite that
never removes an input, and folders locked against a second command."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from animetag.cli import main
from animetag.locks import FolderLocked, folder_lock

keras = pytest.importorskip("keras")


@pytest.fixture()
def run_on_subset(subset_dir, tmp_path):
    """A run folder bound to `subset_dir` as training binds it (config.json's data signature)."""
    from animetag.config import train_config
    from animetag.data.subset import read_subset
    from animetag.folders import data_signature
    from animetag.model.architecture import build_model

    tags, _, _ = read_subset(subset_dir)
    run = tmp_path / "run"
    run.mkdir()
    keras.utils.set_random_seed(0)
    build_model(len(tags) - 4, 32, train_config("sample").model, n_ratings=4).save(run / "model.keras")
    (run / "config.json").write_text(json.dumps({"train": {}, "data": data_signature(subset_dir)}))
    return run


def test_evaluation_on_other_data_is_refused_naming_the_difference(subset_dir, run_on_subset, tmp_path, capsys):
    from animetag.evaluation.evaluate import DataMismatch, evaluate, predict_split

    run = run_on_subset
    evaluate(subset_dir, run, n_boot=20)
    # the same images, tags in another order: scores would be read against the wrong tags
    other = tmp_path / "other"
    shutil.copytree(subset_dir, other)
    tags = pd.read_csv(other / "tags.csv", keep_default_na=False)
    pd.concat([tags.iloc[:4], tags.iloc[4:].iloc[::-1]]).to_csv(other / "tags.csv", index=False)  # ratings stay first
    with pytest.raises(DataMismatch, match="tags_sha1"):
        evaluate(other, run, n_boot=20)
    assert main(["evaluate", "--data", str(other), "--run", str(run), "--bootstrap", "20"]) == 2
    assert "trained on other data" in capsys.readouterr().err
    # the same tags, another split: refused too, and the score cache is not reused for it
    shutil.copy(subset_dir / "tags.csv", other / "tags.csv")
    m = pd.read_csv(other / "manifest.csv", keep_default_na=False, dtype={"md5": str})
    val, test = m.index[m["split"] == "val"][0], m.index[m["split"] == "test"][0]
    m.loc[[val, test], "split"] = ["test", "val"]
    m.to_csv(other / "manifest.csv", index=False)
    with pytest.raises(DataMismatch, match="split_sha1"):
        evaluate(other, run, n_boot=20)
    before = str(np.load(run / "scores_val.npz")["key"])
    predict_split(other, run, "val")
    assert str(np.load(run / "scores_val.npz")["key"]) != before  # recomputed for the other data


def test_overwrite_never_removes_the_inputs(sample_root, tmp_path, capsys):
    meta = sample_root / "metadata" / "posts.json"
    n_files = sum(1 for _ in sample_root.rglob("*"))
    for out, clash in ((sample_root, "which holds the"), (sample_root / "512px", "lies inside the images root"),
                       (meta.parent, "holds the metadata file")):
        code = main(["subset", "--metadata", str(meta), "--images-root", str(sample_root), "--out", str(out),
                     "--overwrite", "--profile", "sample", "--image-size", "16"])
        err = capsys.readouterr().err
        assert code == 2 and clash in err, err
    assert sum(1 for _ in sample_root.rglob("*")) == n_files  # nothing removed


def test_export_overwrite_never_removes_the_run(run_on_subset, capsys):
    run = run_on_subset
    assert main(["export", "--run", str(run), "--out", str(run), "--overwrite"]) == 2
    assert "holds the run folder" in capsys.readouterr().err
    assert (run / "model.keras").exists()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_second_command_on_a_locked_run_refuses_at_once(subset_dir, tmp_path, capsys):
    from animetag.folders import run_lock

    run = tmp_path / "run"
    lock = run_lock(run)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "command": "animetag train",
                                    "since": "now"}))
        t = time.time()
        code = main(["train", "--data", str(subset_dir), "--run", str(run), "--profile", "tiny", "--epochs", "1"])
        err = capsys.readouterr().err
        assert code == 2 and f"in use by process {holder.pid}" in err and time.time() - t < 10
        assert not run.exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_with_a_message(tmp_path):
    lock = tmp_path / "run.lock"
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "command": "animetag train"}))
    with pytest.warns(UserWarning, match="is gone"), folder_lock(lock, "test") as held:
        assert json.loads(held.read_text())["pid"] == os.getpid()
    assert not lock.exists()  # released
    # another machine (two Colab sessions on one Drive folder): held while it is refreshed
    lock.write_text(json.dumps({"pid": 1, "host": "another-machine", "command": "animetag train"}))
    with pytest.raises(FolderLocked, match="another-machine"), folder_lock(lock, "test"):
        pass
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with pytest.warns(UserWarning, match="not refreshed"), folder_lock(lock, "test"):
        pass


def test_two_subset_builds_into_one_folder(sample_root, tmp_path):
    from animetag.config import SubsetConfig
    from animetag.data.subset import build_subset

    out = tmp_path / "subset"
    with folder_lock(out.with_name("subset.lock"), "animetag subset"), pytest.raises(FolderLocked, match="in use"):
        build_subset(sample_root / "metadata" / "posts.json", sample_root, out,
                     SubsetConfig(top_k=10, image_size=16, workers=1), progress=False)
    assert not out.exists()
