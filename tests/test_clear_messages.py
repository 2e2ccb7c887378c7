"""Bad input named where it is: the minor cases of the fourth hostile-user round, each a
clear message that names the file, field or setting at fault (no raw library traceback,
no memory error, no silent retrying)."""

import json
import socket
import time

import pandas as pd
import pytest


def _posts(n=30):
    return pd.DataFrame({"id": range(1, n + 1), "md5": [f"{i:032x}" for i in range(n)], "file_ext": "jpg",
                         "rating": "g", "tag_string_general": "1girl solo", "tag_string_character": ""})


def test_a_tags_file_saved_with_a_byte_order_mark_reads_its_first_name_clean(tmp_path):
    from animetag.config import read_tag_names

    f = tmp_path / "tags.txt"
    f.write_bytes("solo\nlong_hair, 1girl\n".encode("utf-8-sig"))
    assert read_tag_names(f) == ("solo", "long_hair", "1girl")


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_table_without_an_id_or_the_tags_asked_for_is_refused_naming_the_column(tmp_path, fmt):
    from animetag.data.danbooru import load_posts

    def write(df, name):
        p = tmp_path / f"{name}.{fmt}"
        df.to_parquet(p) if fmt == "parquet" else df.to_csv(p, index=False)
        return p

    assert len(load_posts(write(_posts(), "ok"))[0]) == 30
    with pytest.raises(ValueError, match=r"noid\.\w+: no id among its columns \(md5, file_ext"):
        load_posts(write(_posts().drop(columns=["id"]), "noid"))
    with pytest.raises(ValueError, match=r"nogeneral\.\w+: no tag_string_general among its columns"):
        load_posts(write(_posts().drop(columns=["tag_string_general"]), "nogeneral"), required=["general"])
    # not asked for: read (with no general tags), as a table of statistics would be
    assert len(load_posts(write(_posts().drop(columns=["tag_string_general"]), "nogeneral2"))[0]) == 30
    with pytest.raises(ValueError, match=r"notags\.\w+: no a tag column"):
        load_posts(write(_posts()[["id", "md5"]], "notags"))


def test_a_cut_off_parquet_file_is_named(tmp_path):
    from animetag.data.danbooru import load_posts

    ok = tmp_path / "ok.parquet"
    _posts().to_parquet(ok)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(ok.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"cut\.parquet: not a readable Parquet file"):
        load_posts(cut)


def test_an_export_larger_than_any_client_feeds_is_refused_before_anything_is_built(tmp_path):
    from animetag.tagging.export import MAX_INPUT_SIZE, export_run

    with pytest.raises(ValueError, match="input size: 100000 is not within 8 to 4096.*120.0 GB"):
        export_run(tmp_path / "no-run-needed", tmp_path / "out", input_size=100_000)
    assert MAX_INPUT_SIZE >= 1024 and not (tmp_path / "out").exists()


def test_a_frozen_phase_longer_than_the_run_is_refused_and_a_whole_one_allowed():
    from animetag.config import train_config

    with pytest.raises(ValueError, match="freeze_backbone_epochs = 5 is more than epochs = 2"):
        train_config("tiny", epochs=2, init_from="parent", freeze_backbone_epochs=5)
    assert train_config("tiny", epochs=2, init_from="parent", freeze_backbone_epochs=2).freeze_backbone_epochs == 2


def test_init_from_an_unfinished_run_is_refused_saying_how_far_it_got(tmp_path):
    from animetag.config import train_config
    from animetag.folders import RunFolder
    from animetag.training.finetune import check_parent

    parent = tmp_path / "parent"
    (parent / "checkpoints").mkdir(parents=True)
    (parent / "model.keras").write_bytes(b"the best epoch so far")
    cfg = train_config("tiny", epochs=5)
    (parent / "config.json").write_text(json.dumps({"train": cfg.to_dict()}))
    (parent / "checkpoints" / "state.json").write_text(json.dumps({"epochs_done": 2}))
    child = train_config("tiny", epochs=3, init_from=str(parent))
    with pytest.raises(ValueError, match=r"unfinished \(2 of its 5 epochs done\).*goes on where it stopped"):
        check_parent(RunFolder(parent), child)
    (parent / "checkpoints" / "state.json").write_text(json.dumps({"epochs_done": 5}))
    check_parent(RunFolder(parent), child)  # finished: accepted


def test_an_offline_mirror_fetch_says_so_at_once_not_after_retries(monkeypatch, tmp_path):
    import animetag.data.mirror as mirror

    for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setattr(mirror, "_reached", set())

    def no_network(*a, **k):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", no_network)
    t = time.time()
    with pytest.raises(mirror.MirrorAccessError, match="cannot reach the Hugging Face Hub at .*Name or service not "
                                                       "known.*offline.*METADATA and IMAGES"):
        mirror.plan_fetch(mirror.resolve_preset("nyanko7/danbooru2023"), tmp_path / "m", 1)
    assert time.time() - t < 3

    class ConnectError(Exception):  # httpx's, as the Hub client raises it after its retries
        pass

    said = mirror._access_error(ConnectError("[Errno -2] Name or service not known"), "a/b", None, "its file list")
    assert isinstance(said, mirror.MirrorAccessError) and "cannot reach" in str(said)


def test_a_foreign_model_onnx_runtime_cannot_read_is_named(tmp_path):
    pytest.importorskip("onnxruntime")
    from animetag.tagging.foreign import load_tagger

    (tmp_path / "model.onnx").write_text("<html>rate limited</html>")
    pd.DataFrame({"tag_id": [0], "name": ["solo"], "category": [0], "count": [1]}).to_csv(
        tmp_path / "selected_tags.csv", index=False)
    with pytest.raises(ValueError, match=r"model\.onnx: ONNX Runtime cannot load it .*download it again"):
        load_tagger(str(tmp_path))
    (tmp_path / "selected_tags.csv").write_bytes(b"\xff\xfe\x00garbage\x00,\n\"unclosed")
    with pytest.raises(ValueError, match=r"selected_tags\.csv: "):
        load_tagger(str(tmp_path))


def test_camie_metadata_that_is_not_json_is_named(tmp_path):
    from animetag.tagging.foreign import load_tagger

    (tmp_path / "camie-tagger-v2-metadata.json").write_text("{\"dataset_info\": ")
    (tmp_path / "camie-tagger-v2.onnx").write_text("x")
    with pytest.raises(ValueError, match=r"camie-tagger-v2-metadata\.json: not readable JSON"):
        load_tagger(str(tmp_path))


def test_a_tag_table_or_alias_table_that_does_not_parse_is_named(tmp_path):
    from animetag.data.danbooru import read_tag_table
    from animetag.tagging.foreign import read_aliases

    bad = tmp_path / "table.csv"
    bad.write_bytes(b"name,category\n\"long_hair,0\n")  # a quote left open
    with pytest.raises(ValueError, match=r"table\.csv: not a readable CSV"):
        read_tag_table(bad)
    empty = tmp_path / "aliases.csv"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"aliases\.csv: not a readable CSV"):
        read_aliases(empty)
