"""Teaching a trained run new tags, measured (notebook 07): a parent trained without them, the
parent fine-tuned with them added (`--init-from`), and a run trained from scratch on every tag
for the same total epochs, all three scored on the same test images over the old tags and
the new tags apart, under one threshold policy tuned on the same validation images.

The two subsets are twins (same metadata, images, seed and size) whose posts share their
splits (`splits_from`): the parent never trained on an image the others are tested on. Like
the ablation, the study resumes: a run finished with the same settings is read back, one
interrupted mid-training resumes, one whose settings changed is trained afresh.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from animetag.config import train_config
from animetag.data.subset import twin_subset
from animetag.evaluation.evaluate import policy_f1, predict
from animetag.folders import RunFolder, SubsetFolder, data_signature, write_json_atomic
from animetag.metrics import paired_bootstrap_diff
from animetag.model import policies
from animetag.vocab import tag_rows

RECORD = "teach.json"
RUNS = ("parent", "fine-tuned", "scratch")


def teach_subsets(base: str | Path, out: str | Path, profile: str, characters: int) -> tuple[Path, Path]:
    """(without, with): `base`'s twins without characters and with its `characters` most common
    ones (`base` itself when it keeps that many), their shared posts in the same splits."""
    base, out = SubsetFolder.of(base), Path(out)
    if characters < 1:
        raise ValueError(f"characters = {characters}: teach at least one new tag")
    instead = "use a subset built here"
    with_ = (base.path if base.summary["settings"]["top_k_character"] == characters else
             twin_subset(base, out / f"with-{characters}-characters", profile, instead, top_k_character=characters,
                         splits_from=""))
    without = twin_subset(with_, out / "without-characters", profile, instead, top_k_character=0,
                          splits_from=str(Path(with_).resolve()))
    return Path(without), Path(with_)


def teach(without: str | Path, with_: str | Path, out: str | Path, profile: str, epochs: int,
          finetune_epochs: int, freeze_epochs: int = 1, verbose: int | str = 0, **overrides: Any) -> dict[str, dict]:
    """Trains (or reads back) the three runs in `out`: `parent` on `without` for `epochs`,
    `fine-tuned` from it on `with_` for `finetune_epochs` (the backbone frozen for the first
    `freeze_epochs`), `scratch` on `with_` for `epochs + finetune_epochs`. Returns, by run,
    its folder, settings and training seconds (a session stopped mid-training not counted)."""
    from animetag.training.fit import train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / RECORD
    done = json.loads(record_path.read_text(encoding="utf-8")) if record_path.exists() else {}
    plan = {
        "parent": (without, {"epochs": epochs}),
        "fine-tuned": (with_, {"epochs": finetune_epochs, "init_from": str((out / "parent").resolve()),
                               "freeze_backbone_epochs": min(freeze_epochs, finetune_epochs)}),
        "scratch": (with_, {"epochs": epochs + finetune_epochs}),
    }
    for name in RUNS:
        data, changes = plan[name]
        changes = {**overrides, **changes}
        settings = {"train": train_config(profile, **changes).to_dict(), "data": data_signature(data)}
        if name == "fine-tuned":  # a parent trained again is another parent
            settings["parent"] = done["parent"]["settings"]
        run = RunFolder(out / name)
        old = done.get(name, {})
        if old.get("settings") == settings and old.get("finished") and run.model_path.exists():
            print(f"{name}: done before, read back from {run}")
            continue
        if old.get("settings") != settings and run.path.exists():
            shutil.rmtree(run.path)  # other settings: another run
            old = {}
        print(f"{name}: training {changes['epochs']} epochs on {data} in {run}")
        done[name] = {"settings": settings, "run": str(run), "finished": False, "seconds": old.get("seconds", 0.0)}
        write_json_atomic(record_path, done)  # before: stopped mid-training, it resumes (same settings)
        trained = train(data, run, profile=profile, verbose=verbose, **changes)
        done[name].update(finished=True, seconds=round(done[name]["seconds"] + trained["seconds"], 1))
        write_json_atomic(record_path, done)  # after each run: an interrupted study resumes
    return done


def _scores(run: RunFolder, data: SubsetFolder, split: str) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(labels, scores, column of each tag name) of `data`'s `split`: the labels in the
    subset's layout, the scores in the run's (the parent's outputs are another layout)."""
    _, y, s = predict(run.model, data, split)
    return y, s, {n: i for i, n in enumerate(run.tags["name"])}


def teach_table(with_: str | Path, runs: dict[str, dict], policy: str = policies.DEFAULT_TAGGING,
                n_boot: int = 1000) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The three runs on `with_`'s test images: F1 over the old tags and over the new tags,
    thresholds tuned on its validation images under `policy`, epochs and training time; and
    the paired differences that answer the study (the same images resampled together):
    fine-tuned minus parent on the old tags (what fine-tuning cost them), fine-tuned minus
    scratch on the new and on the old tags."""
    data = SubsetFolder.of(with_)
    pol = policies.get(policy)
    tags = tag_rows(data.tags)
    old_names = set(tag_rows(RunFolder(runs["parent"]["run"]).tags)["name"])
    new = [n for n in tags["name"] if n not in old_names]
    old = [n for n in tags["name"] if n in old_names]
    label_col = {n: i for i, n in enumerate(data.tags["name"])}
    rows, preds = [], {}
    for name in RUNS:
        run = RunFolder(runs[name]["run"])
        row = {"run": name, "epochs": runs[name]["settings"]["train"]["epochs"],
               "train_seconds": runs[name]["seconds"]}
        (yv_all, sv_all, col), (y_all, s_all, _) = _scores(run, data, "val"), _scores(run, data, "test")
        for group, names in (("old", old), ("new", new)):
            if name == "parent" and group == "new":
                row.update({f"{group}_f1_micro": np.nan, f"{group}_f1_macro": np.nan})
                continue
            ours, theirs = [label_col[n] for n in names], [col[n] for n in names]
            yv, sv, y, s = yv_all[:, ours], sv_all[:, theirs], y_all[:, ours], s_all[:, theirs]
            th = policies.tune_all(yv, sv)
            f1 = policy_f1(y, s, th)[pol.key]
            row.update({f"{group}_f1_micro": f1["f1_micro"], f"{group}_f1_macro": f1["f1_macro"]})
            preds[name, group] = (y, s >= np.asarray(pol.threshold(th)))
        rows.append(row)
    table = pd.DataFrame(rows).set_index("run")
    table.loc["fine-tuned + parent", ["epochs", "train_seconds"]] = [
        table.loc["parent", "epochs"] + table.loc["fine-tuned", "epochs"],
        round(table.loc["parent", "train_seconds"] + table.loc["fine-tuned", "train_seconds"], 1)]

    def change(a: tuple[str, str], b: tuple[str, str]) -> dict[str, list[float]]:
        (y, pa), (yb, pb) = preds[a], preds[b]
        assert np.array_equal(y, yb)  # the same images, the same tags
        return paired_bootstrap_diff(y, pa, pb, n_boot=n_boot)

    differences = {
        "policy": pol.key, "n_old_tags": len(old), "n_new_tags": len(new), "new_tags": new,
        "test_images": int(data.split_size("test")),
        "old_tags_fine_tuned_minus_parent": change(("parent", "old"), ("fine-tuned", "old")),
        "new_tags_fine_tuned_minus_scratch": change(("scratch", "new"), ("fine-tuned", "new")),
        "old_tags_fine_tuned_minus_scratch": change(("scratch", "old"), ("fine-tuned", "old")),
        "note": "[difference, low, high] of a paired 95% bootstrap over the test images",
    }
    return table, differences


def verdict(d: dict[str, Any], within: float = 0.05) -> list[str]:
    """The study's answers in words, from `teach_table`'s differences (F1-macro): did the old
    tags lose more than their interval allows, and are the new tags within `within` of the
    run trained from scratch?"""
    lines = []
    diff, lo, hi = d["old_tags_fine_tuned_minus_parent"]["f1_macro"]
    if hi < 0:
        lines.append(f"old tags: fine-tuning cost them F1-macro {diff:+.3f} ({lo:+.3f} to {hi:+.3f}), "
                     "more than chance: freeze the backbone longer or fine-tune fewer epochs")
    else:
        lines.append(f"old tags: no loss beyond chance (F1-macro {diff:+.3f}, interval {lo:+.3f} to {hi:+.3f})")
    diff, lo, hi = d["new_tags_fine_tuned_minus_scratch"]["f1_macro"]
    reach = "within" if diff >= -within or hi >= 0 else "not within"
    lines.append(f"new tags: fine-tuned minus from scratch F1-macro {diff:+.3f} ({lo:+.3f} to {hi:+.3f}): "
                 f"{reach} reach ({within:.2f}, or an interval that holds 0)")
    return lines
