import gzip
import json

import pandas as pd
import pytest

from animetag.data.danbooru import MalformedRecord, load_posts, normalise

API = {
    "id": 4099990.0, "md5": "ABCDEF0123456789abcdef0123456789", "file_ext": "png", "rating": "s",
    "image_width": "1200", "image_height": 900, "created_at": 1_633_046_400_000,
    "tag_string_general": "1girl  long_hair solo", "tag_string_character": "hatsune_miku",
    "tag_string_copyright": "vocaloid", "tag_string_artist": "", "tag_string_meta": "highres",
    "is_deleted": "false",
}
OLD = {
    "id": "123", "md5": "00ff", "file_ext": "jpg", "rating": "e", "image_width": "10",
    "image_height": "20", "is_deleted": False,
    "tags": [{"id": "1", "name": "1girl", "category": "0"}, {"id": "2", "name": "kantoku", "category": "1"},
             {"id": "3", "name": "touhou", "category": "3"}, {"id": "4", "name": "hakurei_reimu", "category": "4"},
             {"id": "5", "name": "highres", "category": "5"}],
}


def test_api_record_messy_values():
    r = normalise(API)
    assert r["id"] == 4099990 and isinstance(r["id"], int)
    assert r["md5"] == "abcdef0123456789abcdef0123456789"
    assert r["image_width"] == 1200 and r["image_height"] == 900
    assert r["tags_general"] == "1girl long_hair solo"
    assert r["tags_character"] == "hatsune_miku" and r["tags_meta"] == "highres"
    assert r["is_deleted"] is False


def test_old_dump_shape_by_category():
    r = normalise(OLD)
    assert r["id"] == 123
    assert (r["tags_general"], r["tags_artist"], r["tags_copyright"], r["tags_character"], r["tags_meta"]) == (
        "1girl", "kantoku", "touhou", "hakurei_reimu", "highres")


def test_missing_fields_and_bad_ids():
    r = normalise({"id": 7, "tag_string_general": "solo"})
    assert r["md5"] == "" and r["image_width"] == 0 and r["rating"] == "" and r["tags_character"] == ""
    for bad in ({"md5": "x"}, {"id": "abc"}, {"id": 1.5}, {"id": None}):
        with pytest.raises(MalformedRecord):
            normalise(bad)


def _expected(df):
    assert df["id"].tolist() == [4099990, 123]
    assert df["tags_general"].tolist() == ["1girl long_hair solo", "1girl"]
    assert df["tags_character"].tolist() == ["hatsune_miku", "hakurei_reimu"]


def test_jsonl_reports_malformed_lines_with_numbers(tmp_path):
    p = tmp_path / "posts.json"
    p.write_text(json.dumps(API) + "\n{\"id\": 5, \"md5\n\n" + json.dumps(OLD) + "\n[1, 2]\n")
    df, rep = load_posts(p)
    _expected(df)
    assert [m["line"] for m in rep.malformed] == [2, 5]
    assert "invalid JSON" in rep.malformed[0]["reason"] and "object" in rep.malformed[1]["reason"]


def test_json_array_streams_across_chunks_and_resyncs(tmp_path):
    from animetag.data.danbooru import LoadReport, _iter_json_array

    p = tmp_path / "posts.json"
    body = ",\n".join([json.dumps(API), '{"id": 9, "md5": oops}', json.dumps(OLD)])
    p.write_text("[\n" + body + "\n]\n")
    df, rep = load_posts(p)
    _expected(df)
    assert [m["line"] for m in rep.malformed] == [3]
    # a chunk smaller than one record forces the decoder to read on mid-object
    rep2 = LoadReport()
    recs = list(_iter_json_array(p, rep2, chunk=17))
    assert [line for line, _ in recs] == [2, 4] and len(rep2.malformed) == 1


def test_csv_parquet_and_gzip_give_the_same_table(tmp_path):
    flat = {k: v for k, v in API.items()}
    old_flat = {"id": "123.0", "md5": "00ff", "file_ext": "jpg", "rating": "e", "image_width": "10",
                "image_height": "", "is_deleted": "", "tag_string_general": "1girl",
                "tag_string_character": "hakurei_reimu", "tag_string_copyright": "touhou",
                "tag_string_artist": "kantoku", "tag_string_meta": "highres"}
    table = pd.DataFrame([flat, old_flat]).astype(str)
    table.to_csv(tmp_path / "posts.csv", index=False)
    table.to_parquet(tmp_path / "posts.parquet")
    with gzip.open(tmp_path / "posts.jsonl.gz", "wt") as f:
        f.write(json.dumps(API) + "\n" + json.dumps(OLD) + "\n")
    for name in ("posts.csv", "posts.parquet", "posts.jsonl.gz"):
        df, rep = load_posts(tmp_path / name)
        _expected(df)
        assert not rep.malformed, name


def test_only_kept_categories_are_stored(tmp_path):
    p = tmp_path / "posts.json"
    p.write_text(json.dumps(API) + "\n")
    df, _ = load_posts(p, categories=("general",))
    assert "tags_general" in df and "tags_character" not in df and "tags_meta" not in df


def test_tag_string_without_categories_counts_as_general():
    r = normalise({"id": 1, "tag_string": "a b"})
    assert r["tags_general"] == "a b" and r["_uncategorised"]


def _locate(root, *args, **kw):
    from animetag.data.image_index import ImageIndex

    return ImageIndex.scan(root).locate(*args, **kw)


def test_image_layouts(tmp_path):
    md5 = "ab" + "0" * 30
    (tmp_path / "512px" / "0999").mkdir(parents=True)
    (tmp_path / "512px" / "0999" / "1999.jpg").write_bytes(b"x")  # a JPEG whatever file_ext says
    (tmp_path / "original" / "0999").mkdir(parents=True)
    (tmp_path / "original" / "0999" / "1999.png").write_bytes(b"x")
    assert _locate(tmp_path, 1999, md5, "png") == tmp_path / "512px/0999/1999.jpg"  # the 512px one first
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab" / f"{md5}.png").write_bytes(b"x")
    assert _locate(tmp_path, 5, md5, "png") == tmp_path / f"ab/{md5}.png"
    (tmp_path / "6.webp").write_bytes(b"x")
    assert _locate(tmp_path, 6, "", "webp") == tmp_path / "6.webp"
    (tmp_path / "original" / "0007").mkdir(parents=True)
    (tmp_path / "original" / "0007" / "7.gif").write_bytes(b"x")
    (tmp_path / "original" / "0007" / "7.png").write_bytes(b"x")
    assert _locate(tmp_path, 7, "", "gif") == tmp_path / "original/0007/7.gif"  # the metadata's extension
    assert _locate(tmp_path, 8, "", "jpg") is None
    assert _locate(tmp_path, 8, "", "jpg", file="6.webp") == tmp_path / "6.webp"
    assert _locate(tmp_path, 8, "", "jpg", file=str(tmp_path / "6.webp")) == tmp_path / "6.webp"
    assert _locate(tmp_path, 8, "", "jpg", file="gone.jpg") is None


def test_linked_folders_are_listed_once_and_a_loop_is_skipped(tmp_path):
    from animetag.data.image_index import ImageIndex

    real = tmp_path / "elsewhere" / "imgs"
    real.mkdir(parents=True)
    (real / "12.jpg").write_bytes(b"x")
    root = tmp_path / "root"
    root.mkdir()
    (root / "images").symlink_to(real)  # a folder holding only a link to the images
    (real / "back").symlink_to(root)  # and a link back up: a loop
    index = ImageIndex.scan(root)
    assert index.locate(12) == root / "images" / "12.jpg" and index.has(12) and not index.has(13)
    assert len(index.files) == 1  # the loop was not followed round


def _api_records(n):
    return [{"id": i, "md5": f"{i:032x}", "file_ext": "jpg", "rating": "g", "tag_string_general": "a b",
             "tag_string_character": "", "score": i} for i in range(1, n + 1)]


@pytest.mark.parametrize("indent", [2, None])
def test_one_bad_value_in_an_api_array_is_one_malformed_record(tmp_path, indent):
    text = json.dumps(_api_records(150), indent=indent).replace('"score": 70', '"score": NaNx', 1)
    (tmp_path / "posts.json").write_text(text)
    df, rep = load_posts(tmp_path / "posts.json")
    assert len(df) == rep.records == 149 and len(rep.malformed) == 1
    bad_line = 1 + text[: text.index("NaNx")].count("\n")
    line = rep.malformed[0]["line"]
    assert line <= bad_line and bad_line - line < 10  # the broken record's own lines
    assert 70 not in set(df["id"]) and {69, 71} <= set(df["id"])


def test_a_truncated_gzip_keeps_the_records_before_the_break(tmp_path):
    import gzip

    data = gzip.compress("\n".join(json.dumps(r) for r in _api_records(300)).encode())
    (tmp_path / "posts.jsonl.gz").write_bytes(data[: len(data) // 2])
    df, rep = load_posts(tmp_path / "posts.jsonl.gz")
    assert rep.truncated and 50 < len(df) < 300 and list(df["id"]) == list(range(1, len(df) + 1))
    assert len(rep.malformed) == 1 and "truncated" in rep.malformed[0]["reason"]
    assert rep.malformed[0]["line"] == len(df) + 1


def test_a_single_json_object_is_named_once(tmp_path, capsys):
    from animetag.cli import main

    p = tmp_path / "response.json"
    p.write_text(json.dumps({"posts": _api_records(3), "count": 3}, indent=2))
    with pytest.raises(ValueError, match=r"not a list of Danbooru posts.*\['posts', 'count'\].*under 'posts'"):
        load_posts(p)
    code = main(["subset", "--metadata", str(p), "--images-root", str(tmp_path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "response.json" in err


def test_flat_tag_strings_are_warned_about_and_categorised_with_a_tag_table(tmp_path):
    from animetag.data.danbooru import flat_tags_warning, read_tag_table

    recs = [{"id": i, "md5": f"{i:032x}", "file_ext": "jpg", "rating": "s",
             "tag_string": "1girl hatsune_miku vocaloid wlop smile"} for i in (1, 2)]
    (tmp_path / "flat.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
    df, rep = load_posts(tmp_path / "flat.jsonl")
    assert rep.uncategorised == 2 and "--tag-table" in flat_tags_warning(rep)
    assert df.iloc[0]["tags_general"] == "1girl hatsune_miku vocaloid wlop smile"  # as the warning says
    # the WD taggers' selected_tags.csv (its rating rows are no Danbooru category)
    (tmp_path / "selected_tags.csv").write_text("tag_id,name,category,count\n0,general,9,0\n1,1girl,0,10\n"
                                               "2,hatsune_miku,4,5\n3,vocaloid,3,5\n4,wlop,1,3\n")
    df, rep = load_posts(tmp_path / "flat.jsonl", tag_table=read_tag_table(tmp_path / "selected_tags.csv"))
    row = df.iloc[0]
    assert rep.uncategorised == 0 and not flat_tags_warning(rep)
    assert (row["tags_general"], row["tags_character"], row["tags_copyright"], row["tags_artist"]) == (
        "1girl smile", "hatsune_miku", "vocaloid", "wlop")
    # a headerless name,category list, as autocomplete tools ship them
    (tmp_path / "tags.csv").write_text('1girl,0,100,""\nhatsune_miku,4,50,"miku"\n')
    assert read_tag_table(tmp_path / "tags.csv") == {"1girl": 0, "hatsune_miku": 4}
