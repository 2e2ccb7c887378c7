"""`animetag app`: the tagger as people meet taggers, a Gradio page (as SmilingWolf's WD
tagger Space): drop or paste an image, see its tags grouped by category with their scores,
move a category's threshold or pick a policy, copy the caption; tag a folder; put another
run or a published tagger beside the run.

Every number comes from the code `animetag tag` runs (`tagging.tagger.Tagger`: the same
preprocessing, thresholds and caption), so the page's caption equals the command's for the
same image and settings. The model is loaded once, when the app is built; one request at a
time uses it (a queue with a concurrency limit of one), so a second visitor never loads a
second model. The tag action is also the named endpoint `/tag` (an image in; the caption
at the default settings and the scores out) for `gradio_client`.

Needs the `app` extra (`pip install "animetag[app]"`: Gradio).
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from animetag.data.images import ImageError, load_array
from animetag.evaluation.compare import RunTagger, load_any
from animetag.folders import RunFolder
from animetag.model import policies
from animetag.tagging.foreign import ForeignTagger, canonical
from animetag.tagging.tagger import IMAGE_SUFFIXES, TagChoice, Tagger, display_name, tag_paths

SLIDERS = "per category (sliders)"  # the policy choice that applies the category sliders
MCUT = "MCut (per image)"


@dataclass
class Settings:
    """What the page's controls say, turned into the `TagChoice` `animetag tag` takes."""

    policy: str
    sliders: dict[str, float]
    categories: Sequence[str] = ()
    rating_first: bool = False
    underscores_to_spaces: bool = False
    escape_parentheses: bool = False
    max_tags: int | None = None
    exclude: str = ""

    def choice(self, tagger: Tagger) -> TagChoice:
        every = tuple(dict.fromkeys(tagger.categories))
        cats = tuple(c for c in self.categories if c in every)
        return TagChoice(
            policy=None if self.policy in (SLIDERS, MCUT) else self.policy,
            category_thresholds=tuple(self.sliders.items()) if self.policy == SLIDERS else (),
            mcut=self.policy == MCUT,
            max_tags=self.max_tags or None,
            categories=() if set(cats) == set(every) else cats,
            exclude_tags=tuple(t for t in (canonical(x) for x in self.exclude.split(",")) if t),
            underscores_to_spaces=self.underscores_to_spaces, rating=self.rating_first,
            escape_parentheses=self.escape_parentheses)


@dataclass
class TaggerApp:
    """The run (loaded once), the taggers beside it, and the folder the folder tab may read."""

    run: Path
    tagger: Tagger
    others: dict[str, RunTagger | ForeignTagger] = field(default_factory=dict)
    root: Path | None = None

    @classmethod
    def load(cls, run: str | os.PathLike, compare: Sequence[str] = (), root: str | os.PathLike | None = None
             ) -> TaggerApp:
        folder = RunFolder.of(run)
        if not folder.model_path.exists():
            raise FileNotFoundError(f"{folder.path} is not a trained run (no {RunFolder.MODEL}): give a run folder "
                                    "that `animetag train` wrote")
        app = cls(folder.path, Tagger(folder.path), {}, Path(root).resolve() if root else None)
        for spec in compare:
            app.add(spec)
        return app

    # -- one image ------------------------------------------------------------------------

    def scores(self, image: str | os.PathLike) -> np.ndarray:
        """Every output's score for one image file (raises ImageError with the reason)."""
        return self.tagger.scores(load_array(image, self.tagger.size)[None].astype(np.float32))[0]

    def default_slider(self) -> float:
        saved = self.tagger.thresholds or {}
        return round(float(saved.get("global", 0.5)), 2)

    def tag_categories(self) -> list[str]:
        return list(dict.fromkeys(self.tagger.categories))

    def result(self, scores: np.ndarray, settings: Settings) -> dict[str, Any]:
        """The caption, the rating scores, and the chosen tags by category with their scores."""
        t = self.tagger
        choice = settings.choice(t)
        chosen = dict(t.choose(scores[None], choice)[0])  # as the caption shows them -> score
        groups: dict[str, dict[str, float]] = {c: {} for c in self.tag_categories()}
        for name, cat in zip(t.names, t.categories):  # grouped by each tag's category
            shown = display_name(name, choice.underscores_to_spaces, choice.escape_parentheses)
            if shown in chosen:
                groups[cat][shown] = chosen[shown]
        ratings = {n: float(scores[i]) for i, n in enumerate(t.rating_names)}
        return {"caption": t.caption(scores[None], choice), "ratings": ratings, "groups": groups}

    # -- taggers beside it --------------------------------------------------------------------

    def add(self, spec: str) -> str:
        """Another run or a published tagger (any spec `animetag compare --tagger` takes)."""
        other = load_any(spec)
        if other.name in self.others or other.name == "run":
            raise ValueError(f"a tagger named {other.name!r} is already beside the run; name it NAME=PATH")
        self.others[other.name] = other
        return other.name

    def side_by_side(self, image: str | os.PathLike, scores: np.ndarray, settings: Settings) -> list[list[Any]]:
        """Rows (tag, category, the run's score, the tagger's name, its score, who gives it)
        over the tags each shares with the run that either gives: `both`, `run only` or `NAME
        only`, each side at its own thresholds (the run's as the page chooses them, the
        caption's tags; a run beside it at its thresholds.json; a published tagger at its
        published thresholds, else 0.5)."""
        t = self.tagger
        choice = settings.choice(t)
        chosen = {shown for shown, _ in t.choose(scores[None], choice)[0]}
        ours = {j for j, n in enumerate(t.names)
                if display_name(n, choice.underscores_to_spaces, choice.escape_parentheses) in chosen}
        rows = []
        for name, other in self.others.items():
            theirs = {canonical(n): k for k, (n, c) in enumerate(zip(other.names, other.categories)) if c != "rating"}
            s = other.scores(other.prepare(image)[None])[0]
            th = _their_thresholds(other)
            for j, tag in enumerate(t.names):
                k = theirs.get(canonical(tag))
                if k is None:
                    continue
                a, b = j in ours, bool(s[k] >= th[k])
                if not (a or b):
                    continue
                mark = "both" if a and b else ("run only" if a else f"{name} only")
                rows.append([tag, t.categories[j], round(float(scores[t.n_ratings + j]), 3), name,
                             round(float(s[k]), 3), mark])
        rows.sort(key=lambda r: (r[3], {"both": 0}.get(r[5], 1), -max(r[2], r[4])))
        return rows

    # -- a folder -----------------------------------------------------------------------------

    def allowed_folder(self, text: str) -> Path:
        """A folder on this machine, inside the root the app was started for (`--root`)."""
        if self.root is None:
            raise PermissionError("this app reads no folder of the machine it runs on (start it with --root FOLDER)")
        p = Path(text).expanduser()
        p = (p if p.is_absolute() else self.root / p).resolve()
        if not p.is_relative_to(self.root):
            raise PermissionError(f"{text}: outside the folder this app serves ({self.root})")
        if not p.is_dir():
            raise FileNotFoundError(f"{text}: no such folder under {self.root}")
        return p

    def tag_folder(self, uploads: Sequence[str], folder: str, beside: bool, overwrite: bool,
                   settings: Settings, work: Path) -> tuple[str, Path | None, list[list[str]]]:
        """Tag uploaded images or a folder under the root, as `animetag tag` does (the same
        exit rules: unreadable images listed, nothing overwritten unless asked). Returns a
        one-line summary, a zip of the captions (None when they were written beside the
        images) and the unreadable images with their reasons."""
        choice = settings.choice(self.tagger)
        if folder.strip():
            src = self.allowed_folder(folder.strip())
            out = None if beside else work / "captions"
            paths = [src]
        elif uploads:
            src = work / "images"
            src.mkdir(parents=True)
            for i, f in enumerate(uploads):
                name = Path(f).name if Path(f).suffix.lower() in IMAGE_SUFFIXES else f"{Path(f).name}.png"
                target = src / name
                if target.exists():
                    target = src / f"{Path(name).stem}-{i}{Path(name).suffix}"
                shutil.copyfile(f, target)
            out, paths = work / "captions", [src]
        else:
            raise ValueError("give images to upload or a folder under the root")
        rep = tag_paths(self.tagger, paths, out=out, choice=choice, overwrite=overwrite or out is not None)
        errors = [[Path(e["file"]).name, e["reason"], e["detail"]] for e in rep.errors]
        summary = rep.summary()
        if out is None:
            summary += f"; captions written beside the images in {src}"
            return summary, None, errors
        archive = work / "captions.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(out.rglob("*.txt")) if out.exists() else []:
                z.write(f, f.relative_to(out).as_posix())
        return summary, archive, errors


def _their_thresholds(other: RunTagger | ForeignTagger) -> np.ndarray:
    """One threshold per output of `other`: its published one, else 0.5."""
    if other.published is None or len(other.published) != len(other.names):
        return np.full(len(other.names), 0.5)
    return np.where(np.isnan(other.published), 0.5, other.published)


_REASONS = {"not_an_image": "not an image file (Pillow cannot identify it)",
            "corrupt_image": "the image data is damaged or cut off",
            "missing_file": "the file is gone"}


def why(e: ImageError, name: str) -> str:
    """An unreadable image's message for the page: the file's name, what is wrong in words,
    and the reason code `animetag tag` lists it under."""
    words = _REASONS.get(e.reason) or str(e).split(": ")[-1]
    return f"{name}: {words} ({e.reason})"


def _path_of(payload: Any) -> str | None:
    """The file behind an image input's raw value (its upload's path), or None."""
    if payload is None:
        return None
    if isinstance(payload, (str, os.PathLike)):
        return str(payload)
    if isinstance(payload, dict):
        return payload.get("path")
    return getattr(payload, "path", None)


def _name_of(payload: Any) -> str:
    """The name the file had on the visitor's machine (its upload's), else its own."""
    orig = payload.get("orig_name") if isinstance(payload, dict) else getattr(payload, "orig_name", None)
    return orig or Path(_path_of(payload) or "image").name


def _copyable(gr, **kw):
    """A text box with a copy button under Gradio 5 (`show_copy_button`) and 6 (`buttons`)."""
    params = inspect.signature(gr.Textbox.__init__).parameters
    if "buttons" in params:
        return gr.Textbox(buttons=["copy"], **kw)
    return gr.Textbox(show_copy_button=True, **kw)


def build(app: TaggerApp):
    """The page: one `gr.Blocks`, the model loaded before it (in `app`)."""
    import gradio as gr

    t = app.tagger
    cats = app.tag_categories()
    policy_names = [p.name for p in policies.table()]
    default_policy = t.policy_name(TagChoice())
    with gr.Blocks(title=f"animetag: {app.run.name}") as demo:
        gr.Markdown(f"# animetag: {app.run.name}\n{len(t.names)} tags ({', '.join(cats)}), "
                    f"{t.n_ratings and 'with' or 'without'} ratings; images prepared as `animetag tag` prepares them "
                    f"({t.size} px).")
        scores = gr.State(None)
        with gr.Tab("an image"), gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                 label="image (drop, upload or paste)", elem_id="image")
                policy = gr.Radio(policy_names + [SLIDERS, MCUT], value=default_policy, label="thresholds",
                                  info="per-tag, global, P=R: tuned on the run's validation images; 0.5 fixed; "
                                       "sliders: one per category; MCut: at the largest gap of each image's scores",
                                  elem_id="policy")
                sliders = [gr.Slider(0.0, 1.0, value=app.default_slider(), step=0.01, label=f"{c} threshold",
                                     elem_id=f"slider-{c}") for c in cats]
                with gr.Accordion("caption", open=True):
                    categories = gr.CheckboxGroup(cats, value=cats, label="categories in the caption")
                    rating_first = gr.Checkbox(False, label="rating first")
                    underscores = gr.Checkbox(False, label="underscores to spaces (not inside kaomoji such as ^_^)")
                    escape = gr.Checkbox(False, label="escape parentheses for prompts: \\( \\)")
                    max_tags = gr.Number(0, precision=0, minimum=0, label="at most this many tags (0: no cap)")
                    exclude = gr.Textbox("", label="leave out these tags (comma separated)")
            with gr.Column(scale=1):
                status = gr.Markdown("", elem_id="status")
                caption = _copyable(gr, label="caption (sorted by score)", lines=4, elem_id="caption")
                rating = gr.Label(label="rating", elem_id="rating") if t.n_ratings else gr.State(None)
                labels = [gr.Label(label=c, num_top_classes=200, elem_id=f"tags-{c}") for c in cats]
        settings_inputs = [policy, *sliders, categories, rating_first, underscores, escape, max_tags, exclude]

        def settings_of(values: Sequence[Any]) -> Settings:
            pol, *rest = values
            vals, rest = rest[: len(cats)], rest[len(cats):]
            cat_sel, r_first, under, esc, cap, excl = rest
            return Settings(pol, dict(zip(cats, map(float, vals))), tuple(cat_sel or ()), bool(r_first), bool(under),
                            bool(esc), int(cap or 0) or None, excl or "")

        def score(payload):
            path = _path_of(payload)
            if not path:
                return None, ""
            try:
                return app.scores(path).tolist(), ""
            except ImageError as e:
                return None, f"**Cannot tag this file**: {why(e, _name_of(payload))}"

        def render(s, *values):
            empty = [gr.update(value=None)] * (len(cats) + 2)
            if s is None:
                return empty
            r = app.result(np.asarray(s, np.float32), settings_of(values))
            return [r["caption"], r["ratings"] or None, *[r["groups"][c] for c in cats]]

        outputs = [caption, rating, *labels]
        image.change(score, image, [scores, status], preprocess=False, **_private(gr))
        scores.change(render, [scores, *settings_inputs], outputs, **_private(gr))
        for c in settings_inputs:
            c.change(render, [scores, *settings_inputs], outputs, **_private(gr))
        for s in sliders:  # moving a slider (or typing its value) means: thresholds from the sliders
            s.input(lambda: SLIDERS, None, policy, **_private(gr))

        with gr.Tab("a folder"):
            gr.Markdown("Tag many images at the settings of the first tab: upload them, or name a folder "
                        + (f"under `{app.root}` (the folder this app serves)" if app.root else
                           "(none: this app was started without --root)") + ". Unreadable images are listed; "
                        "captions already beside the images are kept unless you ask.")
            uploads = gr.File(file_count="multiple", file_types=["image"], label="images", elem_id="uploads")
            folder = gr.Textbox("", label="or a folder on this machine", interactive=app.root is not None,
                                elem_id="folder")
            beside = gr.Checkbox(False, label="write captions beside the images (a folder only; else a zip)")
            overwrite = gr.Checkbox(False, label="replace captions that are already there")
            go = gr.Button("tag them", elem_id="tag-folder")
            summary = gr.Markdown("", elem_id="folder-summary")
            archive = gr.File(label="captions (zip)")
            unreadable = gr.Dataframe(headers=["image", "reason", "detail"], label="unreadable images",
                                      interactive=False)

            def folder_run(files, where, bes, over, *values, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
                work = Path(tempfile.mkdtemp(prefix="animetag-app-"))
                try:
                    msg, zipped, errors = app.tag_folder([_path_of(f) for f in files or []], where or "", bes, over,
                                                         settings_of(values), work)
                except (ValueError, OSError) as e:
                    return f"**Not tagged**: {e}", None, []
                return msg, str(zipped) if zipped else None, errors

            go.click(folder_run, [uploads, folder, beside, overwrite, *settings_inputs], [summary, archive, unreadable],
                     **_private(gr))

        with gr.Tab("side by side"):
            gr.Markdown("The first tab's image through other taggers, over the tags each shares with the run: which "
                        "tags both give, and which only one does.")
            with gr.Row():
                spec = gr.Textbox("", label="add a run folder or a WD/Camie tagger folder ([NAME=]PATH)", scale=4)
                add = gr.Button("add", scale=1)
            beside_status = gr.Markdown(", ".join(app.others) and f"beside the run: {', '.join(app.others)}")
            table = gr.Dataframe(headers=["tag", "category", "run", "tagger", "its score", "who gives it"],
                                 interactive=False, elem_id="side-by-side")

            def add_tagger(text):
                try:
                    name = app.add(text.strip())
                except (ValueError, OSError) as e:
                    return f"**Not added**: {e}"
                return f"added {name}; beside the run: {', '.join(app.others)}"

            def compare_now(payload, s, *values):
                path = _path_of(payload)
                if s is None or not path or not app.others:
                    return []
                return app.side_by_side(path, np.asarray(s, np.float32), settings_of(values))

            add.click(add_tagger, spec, beside_status, **_private(gr)).then(
                compare_now, [image, scores, *settings_inputs], table, preprocess=False, **_private(gr))
            scores.change(compare_now, [image, scores, *settings_inputs], table, preprocess=False, **_private(gr))

        # the API: an image in, the caption at the default settings and every score out
        with gr.Row(visible=False):
            api_image = gr.Image(type="filepath", image_mode=None)
            api_caption = gr.Textbox()
            api_scores = gr.JSON()
        api_go = gr.Button(visible=False)

        def api_tag(payload):
            path = _path_of(payload)
            if not path:
                raise gr.Error("no image given")
            try:
                s = app.scores(path)
            except ImageError as e:
                raise gr.Error(f"cannot tag this file: {why(e, _name_of(payload))}") from None
            every = {n: round(float(v), 4) for n, v in zip(t.rating_names + t.names, s)}
            return t.caption(s[None], TagChoice()), every

        api_go.click(api_tag, api_image, [api_caption, api_scores], api_name="tag", preprocess=False)
    demo.queue(default_concurrency_limit=1)
    return demo


def _has_param(fn, name: str) -> bool:
    return name in inspect.signature(fn).parameters


def _private(gr) -> dict[str, Any]:
    """Event settings that keep an event out of the API page (Gradio 6 and 5 spell it apart)."""
    return {"api_visibility": "private"} if _has_param(gr.Button.click, "api_visibility") else {"api_name": False}


def serve(run: str | os.PathLike, compare: Sequence[str] = (), host: str = "127.0.0.1", port: int | None = None,
          root: str | os.PathLike | None = None, share: bool = False, inline: bool | None = None,
          block: bool = True):
    """Build the app for `run` and start it; returns the Blocks (already serving when
    `block` is False: close it with `.close()`)."""
    demo = build(TaggerApp.load(run, compare, root))
    demo.launch(server_name=host, server_port=port, share=share, inline=inline, prevent_thread_lock=not block,
                show_error=True, quiet=not block)
    return demo
