"""The Colab side: form fields overridden by the environment, the workspace on Drive, and
the accelerator check of the full profile."""

import json
import sys
import types

import pytest

from animetag.config import COLAB_WORKSPACE, data_home
from animetag.notebook import params_from_env
from animetag.training.runtime import NoAccelerator, require_accelerator

CPU = {"kind": "cpu", "name": "CPU", "count": 1, "compute_capability": None}
GPU = {"kind": "gpu", "name": "Tesla T4", "count": 1, "compute_capability": (7, 5)}


def test_form_fields_are_overridden_by_the_environment_with_their_types(monkeypatch):
    fields = dict(PROFILE="sample", EPOCHS=0, LR=0.0, REBUILD=False, METADATA="")
    for k in fields:
        monkeypatch.delenv(f"ANIMETAG_{k}", raising=False)
    assert params_from_env(**fields) == fields
    monkeypatch.setenv("ANIMETAG_EPOCHS", "3")
    monkeypatch.setenv("ANIMETAG_LR", "0.01")
    monkeypatch.setenv("ANIMETAG_REBUILD", "1")
    monkeypatch.setenv("ANIMETAG_PROFILE", "full")
    monkeypatch.setenv("ANIMETAG_METADATA", "  ")  # blank: the field's value stays
    got = params_from_env(**fields)
    assert got == {"PROFILE": "full", "EPOCHS": 3, "LR": 0.01, "REBUILD": True, "METADATA": ""}
    assert type(got["EPOCHS"]) is int and type(got["LR"]) is float
    monkeypatch.setenv("ANIMETAG_EPOCHS", "three")
    with pytest.raises(ValueError, match="ANIMETAG_EPOCHS='three' is not an integer"):
        params_from_env(**fields)


def test_a_workspace_is_its_fields_and_the_profiles_defaults(tmp_path, monkeypatch):
    """Nothing is read from the environment here: the notebook's fields (after
    params_from_env) are passed in."""
    from animetag.notebook import ensure_sample, workspace

    for k in ("HOME", "SUBSET", "RUN", "METADATA", "IMAGES", "PROFILE"):
        monkeypatch.setenv(f"ANIMETAG_{k}", str(tmp_path / "from-the-environment"))
    ws = workspace("tiny", tmp_path)
    assert (ws.subset, ws.run, ws.figures) == (tmp_path / "subsets" / "tiny", tmp_path / "runs" / "tiny",
                                               tmp_path / "figures" / "tiny")
    assert ws.on_sample and ws.metadata == [tmp_path / "sample" / "metadata" / "posts.json"]
    assert ws.images_root == tmp_path / "sample"
    other = workspace("full", tmp_path, metadata=f"{tmp_path}/a.parquet; {tmp_path}/b.parquet", images=tmp_path / "im",
                      run=tmp_path / "mine")
    assert not other.on_sample and other.metadata == [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    assert other.run == tmp_path / "mine" and other.images_root == tmp_path / "im"
    ensure_sample(ws)  # the tiny profile's sample: 400 posts
    assert json.loads((tmp_path / "sample" / "sample.json").read_text())["n_images"] == 400


def test_the_full_profile_stops_on_a_cpu_unless_allowed():
    assert require_accelerator("full", acc=GPU) == GPU
    assert require_accelerator("sample", acc=CPU) == CPU  # made for a CPU
    with pytest.raises(NoAccelerator, match="Change runtime type"):
        require_accelerator("full", acc=CPU)
    with pytest.warns(UserWarning, match="days"):
        assert require_accelerator("full", allow_cpu=True, acc=CPU) == CPU


def test_on_colab_the_workspace_defaults_to_drive(monkeypatch, tmp_path):
    monkeypatch.setenv("ANIMETAG_HOME", str(tmp_path / "ignored"))  # settings come as arguments, not from here
    outside = data_home()
    assert outside.name == "data"  # the repository's data folder
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr("animetag.config.COLAB_WORKSPACE", tmp_path / "MyDrive" / "animetag")
    assert data_home() == outside  # Drive not mounted: nowhere to keep things
    (tmp_path / "MyDrive").mkdir()
    assert data_home() == tmp_path / "MyDrive" / "animetag"
    assert data_home(tmp_path / "elsewhere") == tmp_path / "elsewhere"  # the WORKSPACE field wins
    assert str(COLAB_WORKSPACE) == "/content/drive/MyDrive/animetag"


def test_a_subset_on_drive_is_copied_to_the_local_disk_once(tmp_path, monkeypatch):
    import shutil

    from animetag.notebook import local_subset

    drive, local = tmp_path / "drive", tmp_path / "local"
    subset = drive / "MyDrive" / "animetag" / "subsets" / "full"
    (subset / "shards").mkdir(parents=True)
    (subset / "shards" / "train-00000.tfrecord").write_bytes(b"x" * 100)
    (subset / "subset.json").write_text('{"n": 1}')
    copies = []
    real = shutil.copytree
    monkeypatch.setattr(shutil, "copytree",
                        lambda a, b, *args, **k: (copies.append(a) if a == subset else None) or real(a, b, *args, **k))
    got = local_subset(subset, drive, local)
    assert got == local / "full" and (got / "shards" / "train-00000.tfrecord").read_bytes() == b"x" * 100
    assert local_subset(subset, drive, local) == got and len(copies) == 1  # once per session
    (subset / "subset.json").write_text('{"n": 2}')  # rebuilt on Drive: copied again
    assert local_subset(subset, drive, local) == got and len(copies) == 2
    assert (got / "subset.json").read_text() == '{"n": 2}' and not (local / "full.partial").exists()
    elsewhere = tmp_path / "data" / "subsets" / "sample"
    assert local_subset(elsewhere, drive, local) == elsewhere  # not on Drive: read in place


@pytest.mark.parametrize("blocked,expected", [("", "tensorflow"), ("tensorflow", "jax")])
def test_the_backend_is_chosen_from_the_runtime_before_keras_loads(blocked, expected):
    """A runtime without TensorFlow (a Colab TPU) trains under JAX with nothing to edit; one
    with TensorFlow keeps it; Keras then runs on the backend chosen."""
    import os
    import subprocess
    import sys

    pytest.importorskip("jax")
    code = (f"import sys; sys.modules.update({{'{blocked}': None}} if '{blocked}' else {{}}); "
            "from animetag import choose_backend; chosen = choose_backend(); import keras; "
            "print(chosen, keras.backend.backend())")
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-2:] == [expected, expected]
