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

    import animetag.data.subset as sub

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o.partial" / "shards"))

    monkeypatch.setattr(sub, "build_subset", full)
    code = main(["subset", "--metadata", str(tmp_path / "m.json"), "--images-root", str(tmp_path),
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "No space left on device" in err and "o.partial" in err


def test_tags_named_in_a_file_are_kept_exactly_and_a_typo_names_its_closest_tags(sample_root, tmp_path, capsys):
    """`--tags FILE`: those tags, of any category (a character, an artist, general tags written
    with spaces), alone; beside the top-k with --top-k. A name on no post stops the build
    before anything is decoded, with the closest known names."""
    meta, root = str(sample_root / "metadata" / "posts.json"), str(sample_root)
    names = tmp_path / "mine.txt"
    names.write_text("# my tags\nhatsune_miku, kantoku\nLong Hair\nsolo\n")
    args = ["subset", "--metadata", meta, "--images-root", root, "--profile", "sample", "--image-size", "16",
            "--workers", "1", "--tags", str(names)]
    assert main([*args, "--out", str(tmp_path / "alone")]) == 0, capsys.readouterr().err
    tags = pd.read_csv(tmp_path / "alone" / "tags.csv")
    rows = tags[tags["category"] != 9]
    assert sorted(rows["name"]) == ["hatsune_miku", "kantoku", "long_hair", "solo"]
    assert dict(zip(rows["name"], rows["category"])) == {"long_hair": 0, "solo": 0, "hatsune_miku": 4, "kantoku": 1}
    m = pd.read_csv(tmp_path / "alone" / "manifest.csv", keep_default_na=False)
    kept = m["tags"].str.split().explode().dropna()
    assert set(kept) <= set(rows["name"])
    assert rows.set_index("name")["count"].to_dict() == kept.value_counts().to_dict()  # over the kept posts
    assert main([*args, "--top-k", "5", "--out", str(tmp_path / "beside")]) == 0
    beside = pd.read_csv(tmp_path / "beside" / "tags.csv")
    assert {"hatsune_miku", "kantoku"} <= set(beside["name"]) and (beside["category"] == 0).sum() >= 5
    names.write_text("hatsune_mikku\nsolo\nnot_a_tag_at_all\n")
    assert main([*args, "--out", str(tmp_path / "typo")]) == 2
    err = capsys.readouterr().err
    assert "2 of the 3 tags named are on no post" in err and "hatsune_mikku (closest: hatsune_miku" in err
    assert not (tmp_path / "typo").exists()
