"""`animetag app`: the page and its `/tag` endpoint give `animetag tag`'s captions, bad input
is a message in the page while the app keeps serving, a folder is tagged by the command's
rules, other taggers sit beside the run; and one test drives the page in a real headless
Chromium as a person would (upload, read the tags, move a threshold)."""

import io
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")
keras = pytest.importorskip("keras")
pytestmark = pytest.mark.slow  # trains a run and starts servers

from animetag.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def world(sample_root, tmp_path_factory):
    """A run with general and character tags, evaluated (tuned thresholds), exported; a few
    of the sample's images (a JPEG, a transparent PNG) to tag."""
    from conftest import evaluated_run

    root = evaluated_run(sample_root, tmp_path_factory.mktemp("app"), n_boot=20)
    images = root / "images"
    images.mkdir()
    for i, f in enumerate(sorted((sample_root / "512px").rglob("*.jpg"))[:6]):
        shutil.copy(f, images / f"{i}.jpg")
    rgba = Image.open(images / "0.jpg").convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    rgba.save(images / "clear.png")
    return root


def _cli_caption(run, image: Path, tmp: Path, *flags: str) -> str:
    import tempfile

    d = Path(tempfile.mkdtemp(prefix=f"cli-{image.stem}-", dir=tmp))
    shutil.copy(image, d / image.name)
    assert main(["tag", "--run", str(run), str(d), *flags]) == 0
    return (d / image.with_suffix(".txt").name).read_text(encoding="utf-8").rstrip("\n")


@pytest.fixture(scope="module")
def served(world):
    from animetag.app import serve

    demo = serve(world / "run", compare=[f"export={world / 'wd'}"], root=world, block=False, port=None)
    yield demo
    demo.close()


def test_the_tag_endpoint_gives_the_caption_animetag_tag_writes(world, served, tmp_path):
    """`gradio_client` against the app on localhost: for each image (JPEGs and a transparent
    PNG), `/tag` returns the caption `animetag tag` writes at its default settings, and every
    score by name."""
    from gradio_client import Client, handle_file

    client = Client(served.local_url, verbose=False)
    for image in sorted((world / "images").iterdir()):
        caption, scores = client.predict(handle_file(str(image)), api_name="/tag")
        assert caption == _cli_caption(world / "run", image, tmp_path), image.name
        assert len(scores) == 4 + 25 and all(0 <= v <= 1 for v in scores.values())
    assert caption  # the sample's images get tags: the comparison above compared something


def test_requests_at_once_share_the_one_model_one_at_a_time(world, tmp_path, monkeypatch):
    """Four visitors at once: no model is loaded again, and the model serves one request at a
    time (the queue's concurrency limit), each getting the command's caption."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client, handle_file

    from animetag.app import TaggerApp, build

    app = TaggerApp.load(world / "run")
    busy, overlaps, calls = [0], [], []
    inner = app.scores

    def watched(image):
        busy[0] += 1
        overlaps.append(busy[0])
        try:
            import time

            time.sleep(0.2)
            return inner(image)
        finally:
            busy[0] -= 1

    app.scores = watched
    monkeypatch.setattr(keras.saving, "load_model", lambda *a, **k: calls.append(a) or pytest.fail("loaded again"))
    demo = build(app)
    demo.launch(prevent_thread_lock=True, quiet=True)
    try:
        images = sorted((world / "images").glob("*.jpg"))[:4]
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda f: Client(demo.local_url, verbose=False).predict(
                handle_file(str(f)), api_name="/tag")[0], images))
    finally:
        demo.close()
        monkeypatch.undo()  # the command below loads its own model
    assert len(overlaps) == 4 and max(overlaps) == 1 and not calls
    assert got == [_cli_caption(world / "run", f, tmp_path) for f in images]


def test_the_page_settings_are_the_command_options(world, tmp_path):
    """The options the page offers (a category's threshold, MCut, rating first, spaces,
    escaped parentheses, a cap, a left-out tag) give the caption of `animetag tag` with the
    same options."""
    from animetag.app import MCUT, SLIDERS, Settings, TaggerApp

    app = TaggerApp.load(world / "run")
    image = world / "images" / "clear.png"
    s = app.scores(image)
    general = app.tagger.names[0]
    cases = [
        (Settings("per-tag", {"general": 0.39, "character": 0.39}), []),
        (Settings(SLIDERS, {"general": 0.3, "character": 0.6}, rating_first=True),
         ["--category-threshold", "general=0.3", "--category-threshold", "character=0.6", "--rating"]),
        (Settings(MCUT, {"general": 0.5, "character": 0.5}, underscores_to_spaces=True, escape_parentheses=True),
         ["--mcut", "--underscores-to-spaces", "--escape-parentheses"]),
        (Settings("0.5", {}, categories=("general",), max_tags=3, exclude=general),
         ["--policy", "0.5", "--categories", "general", "--max-tags", "3", "--exclude-tags", general]),
        (Settings("global", {}, escape_parentheses=True, underscores_to_spaces=True),
         ["--policy", "global", "--escape-parentheses", "--underscores-to-spaces"]),
    ]
    captions = set()
    for settings, flags in cases:
        got = app.result(s, settings)["caption"]
        assert got == _cli_caption(world / "run", image, tmp_path, *flags), flags
        captions.add(got)
    assert len(captions) >= 4  # the settings change the caption: each case tested something
    # grouped by category, each tag with its score, and the character tags apart
    r = app.result(s, Settings(SLIDERS, {"general": 0.0, "character": 0.0}))
    assert set(r["groups"]) == {"general", "character"} and len(r["groups"]["character"]) == 5
    assert set(r["ratings"]) == {"general", "sensitive", "questionable", "explicit"}


def test_mcut_keeps_what_is_above_the_largest_gap():
    from animetag.tagging.tagger import mcut_threshold

    assert mcut_threshold(np.array([0.9, 0.85, 0.2, 0.1])) == pytest.approx(0.525)
    assert mcut_threshold(np.array([0.3, 0.99, 0.31])) == pytest.approx(0.65)
    assert mcut_threshold(np.array([0.7])) == 0.5


def _truncated_jpeg(src: Path) -> bytes:
    return src.read_bytes()[: len(src.read_bytes()) // 3]


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (10_000, 10_000)).save(buf, "PNG")  # 100M pixels in a few hundred kB
    return buf.getvalue()


def test_bad_input_is_a_clear_message_and_the_app_keeps_serving(world, served, tmp_path):
    from gradio_client import Client, handle_file

    from animetag.app import TaggerApp

    bad = {"notes.png": b"these are not pixels", "cut.jpg": _truncated_jpeg(world / "images" / "0.jpg"),
           "bomb.png": _bomb()}
    said = {"notes.png": r"notes.png: not an image file \(Pillow cannot identify it\) \(not_an_image\)",
            "cut.jpg": r"cut.jpg: the image data is damaged or cut off \(corrupt_image\)",
            "bomb.png": r"bomb.png: 10000x10000 pixels is over the limit of 64000000 \(too_large\)"}
    client = Client(served.local_url, verbose=False)
    good = world / "images" / "1.jpg"
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(Exception, match=f"cannot tag this file: {said[name]}"):
            client.predict(handle_file(str(tmp_path / name)), api_name="/tag")
        (tmp_path / name[:3]).mkdir()
        assert client.predict(handle_file(str(good)), api_name="/tag")[0] == _cli_caption(world / "run", good,
                                                                                           tmp_path / name[:3])
    app = TaggerApp.load(world / "run", root=world / "images")
    with pytest.raises(PermissionError, match="outside the folder this app serves"):
        app.allowed_folder(str(world / "subset"))
    with pytest.raises(PermissionError, match="outside"):
        app.allowed_folder("../subset")
    with pytest.raises(FileNotFoundError, match="not a trained run"):
        TaggerApp.load(world / "subset")
    with pytest.raises((ValueError, OSError)):
        app.add(str(world / "subset"))  # a subset is neither a run nor a tagger: said, and nothing added
    assert app.others == {}


def test_a_folder_is_tagged_by_the_commands_rules(world, tmp_path):
    """Uploads come back as a zip of captions equal to `animetag tag`'s, an unreadable one
    listed; a folder under the root gets its captions beside the images, and an existing
    caption is kept unless replacing is asked for."""
    from animetag.app import Settings, TaggerApp

    folder = tmp_path / "mine"
    shutil.copytree(world / "images", folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    app = TaggerApp.load(world / "run", root=tmp_path)
    settings = Settings("per-tag", {})
    uploads = sorted(str(p) for p in folder.iterdir())
    summary, archive, errors = app.tag_folder(uploads, "", False, False, settings, tmp_path / "w1")
    assert "7 tagged" in summary and [e[0] for e in errors] == ["broken.jpg"] and errors[0][1] == "not_an_image"
    with zipfile.ZipFile(archive) as z:
        zipped = {n: z.read(n).decode().rstrip("\n") for n in z.namelist()}
    assert zipped["clear.txt"] == _cli_caption(world / "run", folder / "clear.png", tmp_path)
    assert len(zipped) == 7

    (folder / "0.txt").write_text("my own caption")
    summary, archive, _ = app.tag_folder([], "mine", True, False, settings, tmp_path / "w2")
    assert archive is None and "1 skipped" in summary and (folder / "0.txt").read_text() == "my own caption"
    assert (folder / "1.txt").read_text().rstrip("\n") == _cli_caption(world / "run", folder / "1.jpg", tmp_path)
    app.tag_folder([], "mine", True, True, settings, tmp_path / "w3")
    assert (folder / "0.txt").read_text() != "my own caption"


def test_side_by_side_marks_the_tags_both_give_and_those_only_one_gives(world):
    from animetag.app import SLIDERS, Settings, TaggerApp

    app = TaggerApp.load(world / "run", compare=[f"itself={world / 'run'}", f"export={world / 'wd'}"])
    image = world / "images" / "2.jpg"
    s = app.scores(image)
    per_tag = Settings("per-tag", {})
    rows = app.side_by_side(image, s, per_tag)
    itself = [r for r in rows if r[3] == "itself"]
    assert itself and all(r[5] == "both" and r[2] == r[4] for r in itself)  # the run beside itself agrees
    low = Settings(SLIDERS, {"general": 0.01, "character": 0.01})  # the page's run keeps everything
    marks = {r[5] for r in app.side_by_side(image, s, low) if r[3] == "itself"}
    assert "run only" in marks


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="needs a Chromium (Debian's `chromium` package; .ci/run installs it)")
def test_in_a_real_browser_an_upload_shows_the_tags_and_a_threshold_changes_them(world, served, tmp_path):
    """Headless Chromium: open the page, upload an image, read the caption and the general
    tags shown; move the general threshold and see the list change (the thresholds now the
    sliders'); choose the fixed 0.5; a file that is not an image gives a message in the page;
    the screenshot for the README."""
    from playwright.sync_api import expect, sync_playwright

    image = world / "images" / "clear.png"
    want = _cli_caption(world / "run", image, tmp_path)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or shutil.which("chromium-browser"),
                                    args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 960})
        page.goto(served.local_url)
        page.set_input_files("#image input[type=file]", str(image))
        caption = page.locator("#caption textarea")
        expect(caption).to_have_value(want, timeout=60_000)
        shown = page.locator("#tags-general").inner_text()
        from animetag.folders import RunFolder

        tags = RunFolder(world / "run").tags
        general = set(tags.loc[tags["category"] == 0, "name"])
        in_caption = [t for t in want.split(", ") if t in general]
        assert in_caption and all(t in shown.split("\n") for t in in_caption)
        page.screenshot(path=str(tmp_path / "app.png"))
        page.locator("#slider-general input[type=range]").fill("0.05")  # as a drag of the slider does
        low = _cli_caption(world / "run", image, tmp_path, "--category-threshold", "general=0.05",
                           "--category-threshold", f"character={page.locator('#slider-character input[type=range]').input_value()}")
        expect(caption).to_have_value(low, timeout=30_000)
        expect(page.get_by_label("per category (sliders)")).to_be_checked()
        assert len(page.locator("#tags-general").inner_text()) > len(shown)  # more general tags shown
        page.get_by_label("0.5", exact=True).check()
        expect(caption).to_have_value(_cli_caption(world / "run", image, tmp_path, "--policy", "0.5"), timeout=30_000)
        (tmp_path / "notes.png").write_bytes(b"not an image")
        page.set_input_files("#image input[type=file]", str(tmp_path / "notes.png"))
        expect(page.locator("#status")).to_contain_text("Cannot tag this file", timeout=30_000)
        browser.close()
    if os.environ.get("ANIMETAG_SCREENSHOT"):  # the README's picture: ANIMETAG_SCREENSHOT=docs/app.png
        shutil.copy(tmp_path / "app.png", os.environ["ANIMETAG_SCREENSHOT"])
