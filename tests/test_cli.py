import json

import pandas as pd

from animetag.cli import main


def test_sample_then_subset_from_the_command_line(tmp_path, capsys):
    assert main(["sample", str(tmp_path / "s"), "--images", "60", "--seed", "2"]) == 0
    assert main(["subset", "--metadata", str(tmp_path / "s/metadata/posts.json"), "--images-root",
                 str(tmp_path / "s"), "--out", str(tmp_path / "o"), "--profile", "sample", "--top-k", "12",
                 "--image-size", "16", "--workers", "1"]) == 0
    counts = json.loads(capsys.readouterr().out.split("subset written")[0].split("\n", 1)[1])
    assert counts["kept"] == len(pd.read_csv(tmp_path / "o/manifest.csv"))
    tags = pd.read_csv(tmp_path / "o/tags.csv")
    # the ratings, the top-12 general tags, then the sample profile's top characters (up to 10;
    # 60 posts show fewer)
    cats = tags["category"].tolist()
    assert cats[:16] == [9] * 4 + [0] * 12 and 1 <= len(cats[16:]) <= 10 and set(cats[16:]) == {4}
    # the manifest names each image's file, relative to the image root
    m = pd.read_csv(tmp_path / "o/manifest.csv")
    assert all((tmp_path / "s" / f).is_file() for f in m["file"])


def test_errors_name_the_file_and_exit_2(tmp_path, capsys):
    code = main(["subset", "--metadata", str(tmp_path / "nope.json"), "--images-root", str(tmp_path),
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "nope.json" in err and "not found" in err
    (tmp_path / "o").mkdir()
    (tmp_path / "m.json").write_text("{}\n")
    code = main(["subset", "--metadata", str(tmp_path / "m.json"), "--images-root", str(tmp_path),
                 "--out", str(tmp_path / "o")])
    assert code == 2 and "exists" in capsys.readouterr().err


def test_train_settings_out_of_range_end_in_one_line_naming_the_setting(subset_dir, tmp_path, capsys):
    for flag, value, name in (("--epochs", "0", "epochs"), ("--batch-size", "0", "batch_size"),
                              ("--lr", "-1", "lr")):
        code = main(["train", "--data", str(subset_dir), "--run", str(tmp_path / "run"), "--profile", "tiny",
                     flag, value])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith(f"animetag train: error: {name} = ") and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()  # refused before anything was written
    # a split smaller than one batch is named with its size
    code = main(["train", "--data", str(subset_dir), "--run", str(tmp_path / "run2"), "--profile", "tiny",
                 "--batch-size", "100000", "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "'train' split" in err and "fewer than one batch of 100000" in err
    assert not (tmp_path / "run2").exists()


def test_a_full_disk_ends_in_one_line_naming_the_path(tmp_path, capsys, monkeypatch):
    import errno

    import animetag.subset as sub

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o.partial" / "shards"))

    monkeypatch.setattr(sub, "build_subset", full)
    code = main(["subset", "--metadata", str(tmp_path / "m.json"), "--images-root", str(tmp_path),
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "No space left on device" in err and "o.partial" in err
