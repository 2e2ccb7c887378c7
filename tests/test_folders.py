"""The run and subset folders as objects, the one atomic-write helper, the policy table."""

import json
import os

import pandas as pd
import pytest

from animetag.folders import RunFolder, SubsetFolder, atomic_path, write_json_atomic
from animetag.model.policies import table


def test_an_interrupted_write_leaves_the_old_file_whole_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    write_json_atomic(target, {"f1": 0.5})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp, open(tmp, "w") as f:
        f.write('{"f1": 0.')  # half written, then the job dies
        raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"f1": 0.5}
    assert sorted(os.listdir(tmp_path)) == ["metrics.json"]
    # the temporary keeps the extension, for writers that go by it (Keras, numpy)
    with atomic_path(tmp_path / "model.keras") as tmp:
        assert tmp.suffix == ".keras" and tmp.parent == tmp_path
        tmp.write_text("x")
    assert (tmp_path / "model.keras").read_text() == "x"


def test_a_folder_that_is_not_a_subset_says_so(tmp_path):
    (tmp_path / "o.partial").mkdir()
    with pytest.raises(FileNotFoundError, match=r"o is not a built subset: no subset.json \(an interrupted build"):
        SubsetFolder(tmp_path / "o").tags  # noqa: B018
    with pytest.raises(FileNotFoundError, match="no model.keras in .*: train first"):
        RunFolder(tmp_path / "run").model  # noqa: B018


def test_a_subset_folder_reads_each_file_once_and_passes_for_a_path(subset_dir, monkeypatch):
    from animetag.data.subset import read_subset
    from animetag.folders import data_signature

    reads = []
    real = pd.read_csv
    monkeypatch.setattr(pd, "read_csv", lambda path, *a, **k: reads.append(os.path.basename(path)) or real(path, *a, **k))
    folder = SubsetFolder(subset_dir)
    sig = data_signature(folder)
    sizes = {s: folder.split_size(s) for s in ("train", "val", "test")}
    tags, manifest, summary = read_subset(folder)
    assert folder.n_outputs == sig["n_outputs"] == len(tags) == sig["n_tags"] + sig["n_ratings"]
    assert sorted(reads) == ["manifest.csv", "tags.csv"]  # once each, whatever asked
    assert sizes == sig["split_sizes"] and sum(sizes.values()) == len(manifest)
    assert sig["image_size"] == summary["settings"]["image_size"]
    # the same answers from a plain path (read afresh)
    assert data_signature(subset_dir) == sig and os.fspath(folder) == str(subset_dir)


def test_the_policy_table_is_the_one_every_report_uses():
    from animetag.evaluation.evaluate import policy_table
    from animetag.evaluation.published import _policy_kind

    metrics = {p.key: {"threshold": 0.3, "f1_micro": 0.1 * i, "f1_macro": 0.05 * i} for i, p in enumerate(table())}
    shown = policy_table(metrics)
    assert list(shown.index) == [p.label for p in table()]
    assert shown["f1_micro"].tolist() == pytest.approx([0.1 * i for i in range(len(table()))])
    tuned = {"global": 0.34, "precision_equals_recall": 0.29, "per_tag": [0.2, 0.4]}
    # each run row's threshold text is sorted into the policy's own group for the comparison
    assert [_policy_kind(p.describe(tuned)) for p in table()] == [p.kind for p in table()]
    assert len({p.key for p in table()}) == len({p.name for p in table()}) == len(table())


@pytest.mark.slow
def test_a_training_run_reads_each_file_of_its_subset_once(subset_dir, tmp_path, monkeypatch):
    pytest.importorskip("tensorflow")
    from pathlib import Path

    from animetag.training.fit import train

    reads = []
    real_csv, real_text = pd.read_csv, Path.read_text

    def csv(path, *a, **k):
        reads.append(Path(path))
        return real_csv(path, *a, **k)

    def text(self, *a, **k):
        reads.append(self)
        return real_text(self, *a, **k)

    monkeypatch.setattr(pd, "read_csv", csv)
    monkeypatch.setattr(Path, "read_text", text)
    train(subset_dir, tmp_path / "run", profile="tiny", image_size=16, epochs=1, batch_size=16, verbose=0)
    of_subset = sorted(p.name for p in reads if p.parent == subset_dir)
    assert of_subset == ["manifest.csv", "subset.json", "tags.csv"]


def test_two_writers_of_one_file_never_share_a_temporary_name(tmp_path):
    names = []
    target = tmp_path / "scores.npz"
    with atomic_path(target) as a, atomic_path(target) as b:
        names += [a.name, b.name]
        a.write_bytes(b"a")
        b.write_bytes(b"b")
    assert names[0] != names[1] and all(n.endswith(".npz") for n in names)
    assert target.read_bytes() == b"a" and sorted(p.name for p in tmp_path.iterdir()) == ["scores.npz"]


def test_a_fingerprint_changes_with_a_file_size_time_or_presence_and_cached_arrays_follow_it(tmp_path):
    import time
    import warnings

    import numpy as np

    from animetag.folders import cached_arrays, fingerprint

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"12345")
    b.write_bytes(b"x")
    first = fingerprint([a, b])
    assert fingerprint([a, b]) == first and fingerprint([b, a]) != first
    a.write_bytes(b"54321")  # same size, later time
    os.utime(a, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    second = fingerprint([a, b])
    assert second != first
    b.unlink()
    assert fingerprint([a, b]) != second

    calls = []

    def compute():
        calls.append(1)
        return {"scores": np.arange(3.0)}

    cache = tmp_path / "c.npz"
    assert cached_arrays(cache, "k1", compute)["scores"].tolist() == [0, 1, 2] and len(calls) == 1
    cached_arrays(cache, "k1", compute)
    assert len(calls) == 1  # read back
    cached_arrays(cache, "k2", compute)
    assert len(calls) == 2  # another key: computed again
    cache.write_bytes(b"PK\x03\x04 cut off")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cached_arrays(cache, "k2", compute)["scores"].tolist() == [0, 1, 2]
    assert len(calls) == 3 and any(str(cache) in str(w.message) for w in caught)
