"""The `animetag` command line: the same functions the notebooks call."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from animetag.config import PROFILES, SUBSET_PROFILES, deep_merge, parse_sets, read_tag_names, subset_config
from animetag.locks import FolderLocked
from animetag.model.policies import names as policy_names
from animetag.registry import BACKBONES, LOSSES, POLICIES


def _at_least(low: int):
    """An argparse type: an integer of at least `low`."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"{v} is below {low}")
        return v
    return parse


def _category_threshold(text: str) -> tuple[str, float]:
    """An argparse type: CATEGORY=T (T from 0 to 1)."""
    cat, sep, value = text.partition("=")
    if not sep or not cat.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not CATEGORY=THRESHOLD (e.g. character=0.85)")
    return cat.strip(), _probability(value)


def _probability(text: str) -> float:
    """An argparse type: a number from 0 to 1."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= v <= 1:  # nan fails this too
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return v


def _csv(s: str) -> list[str]:
    return [x for x in s.replace(",", " ").split() if x]


def cmd_sample(a: argparse.Namespace) -> int:
    from animetag.data.sample import generate

    desc = generate(a.out, n_images=a.images, seed=a.seed, clean=a.clean, detail=a.detail)
    print(f"wrote {desc['n_images']} posts to {a.out} (metadata/posts.json, 512px/, original/)")
    return 0


def cmd_subset(a: argparse.Namespace) -> int:
    from animetag.data.subset import build_subset

    tags = read_tag_names(a.tags) if a.tags else None
    if tags and a.top_k is None:  # the tags named alone, unless a top-k is asked for beside them
        a.top_k, a.top_k_character = 0, a.top_k_character or 0
    cfg = subset_config(a.profile, top_k=a.top_k, tags=tags, top_k_character=a.top_k_character,
                        rating_outputs=a.rating_outputs, rating_scheme=a.rating_scheme,
                        max_images=a.max_images, image_size=a.image_size,
                        categories=tuple(_csv(a.categories)) if a.categories else None,
                        min_tags=a.min_tags, ratings=tuple(_csv(a.ratings)) if a.ratings else None,
                        exclude_tags=tuple(a.exclude_tags) if a.exclude_tags else None, tag_table=a.tag_table,
                        seed=a.seed, workers=a.workers, splits_from=a.splits_from, split_by=a.split_by,
                        near_duplicate_bits=a.near_duplicate_bits)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # printed once below, from the summary
        s = build_subset(a.metadata, a.images_root, a.out, cfg, overwrite=a.overwrite)
    print(json.dumps(s["counts"], indent=2))
    for w in s.get("warnings", []):
        print(f"animetag subset: warning: {w}", file=sys.stderr)
    print(f"subset written to {a.out} in {s['seconds']['total']} s")
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from animetag.training.fit import train

    settings = deep_merge(dict(epochs=a.epochs, batch_size=a.batch_size, image_size=a.image_size, loss=a.loss,
                               lr=a.lr, precision=a.precision, xla=a.xla, init_from=a.init_from,
                               freeze_backbone_epochs=a.freeze_backbone_epochs,
                               model={"backbone": a.backbone} if a.backbone else None),
                          parse_sets(a.set or []))
    result = train(a.data, a.run, profile=a.profile, coordinator=a.coordinator, num_processes=a.num_processes,
                   process_id=a.process_id, **settings)
    print(json.dumps(result, indent=2))
    return 0


def cmd_app(a: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise ValueError("the app needs Gradio: pip install \"animetag[app]\" (or pip install gradio)")
    from animetag.app import serve

    print(f"animetag app: {a.run} at http://{a.host}:{a.port or 7860} (Ctrl-C stops it)")
    serve(a.run, a.compare or [], host=a.host, port=a.port, root=a.root, share=a.share)
    return 0


def cmd_plugins(a: argparse.Namespace) -> int:
    for registry in (BACKBONES, LOSSES, POLICIES):
        print(f"{registry.kind}s:")
        for e in registry.entries():
            print(f"  {e.name:<18} {e.doc}")
            if e.settings is not None:
                print(f"  {'':<18} settings: {json.dumps(registry.defaults(e.name))}")
    return 0


def _print_comparison(r: dict, out: Path) -> None:
    from animetag.evaluation.compare import compare_table

    print(f"images: {r['images']['test']} from {r['images']['test_from']} (truth: {r['images']['truth']}); "
          f"{r['thresholds']}")
    for k, v in r["run_all_tags"].items():
        print(f"the run, all its {r['run_tags']} tags, {k}: F1-micro {v['f1_micro']:.4f}, F1-macro {v['f1_macro']:.4f}")
    if r["caption_tags_outside_the_run"]:
        unknown = r["caption_tags_outside_the_run"]
        print(f"caption tags outside the run's vocabulary (not scored): {len(unknown)}, e.g. "
              + ", ".join(f"{t} ({n})" for t, n in list(unknown.items())[:10]))
    for s in r["images"]["skipped"]:
        print(f"  skipped {s.get('image') or s.get('file')}: {s['reason']} ({s['detail']})", file=sys.stderr)
    if r["taggers"]:
        print(compare_table(r).to_string(index=False))
    print(f"wrote compare.json and compare.csv to {out}")


def cmd_compare(a: argparse.Namespace) -> int:
    from animetag.evaluation.compare import compare
    from animetag.tagging.foreign import read_aliases

    out = Path(a.out) if a.out else Path(a.run) / "compare"
    r = compare(a.run, a.tagger or [], data=a.data, labels=a.labels, out=out,
                aliases=read_aliases(a.aliases) if a.aliases else None, n_boot=a.bootstrap, batch_size=a.batch_size)
    _print_comparison(r, out)
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from animetag.evaluation.evaluate import comparison_table, evaluate

    if a.labels:  # a labelled folder is the test set: the run alone, as `compare` scores it
        from animetag.evaluation.compare import compare

        out = Path(a.run) / "labels" / Path(a.labels).resolve().name
        _print_comparison(compare(a.run, [], data=a.data, labels=a.labels, out=out, n_boot=a.bootstrap), out)
        return 0
    if not a.data:
        raise ValueError("evaluate: give --data SUBSET (or --labels FOLDER)")
    m = evaluate(a.data, a.run, split=a.split, n_boot=a.bootstrap)
    print(json.dumps({k: v for k, v in m.items() if k not in ("comparison", "ci95_by_policy")}, indent=2))
    print(comparison_table(m).to_string(index=False))
    print(f"wrote metrics.json, per_tag.csv and thresholds.json to {a.run}")
    return 0


def cmd_tag(a: argparse.Namespace) -> int:
    from animetag.tagging.tagger import TagChoice, Tagger, tag_paths

    policy = "per-tag" if a.thresholds == "tuned" else a.policy
    if a.threshold is not None and policy:
        raise ValueError("give either --threshold T or --policy NAME, not both")
    tagger = Tagger(a.run, batch_size=a.batch_size)
    choice = TagChoice(threshold=a.threshold, policy=policy, max_tags=a.max_tags,
                       categories=tuple(_csv(a.categories)) if a.categories else (),
                       exclude_tags=tuple(a.exclude_tags or ()), underscores_to_spaces=a.underscores_to_spaces,
                       rating=a.rating, category_thresholds=tuple(a.category_threshold or ()), mcut=a.mcut,
                       escape_parentheses=a.escape_parentheses)
    rep = tag_paths(tagger, a.paths, out=a.out, fmt=a.format, choice=choice, overwrite=a.overwrite)
    for e in rep.errors:
        print(f"  skipped {e['file']}: {e['reason']} ({e['detail']})", file=sys.stderr)
    print(f"animetag tag: {rep.summary()}", file=sys.stderr if rep.exit_status else sys.stdout)
    return rep.exit_status


def cmd_export(a: argparse.Namespace) -> int:
    from animetag.tagging.export import export_run

    print(json.dumps(export_run(a.run, a.out, a.format, channel_order=a.channel_order, overwrite=a.overwrite,
                                input_size=a.input_size), indent=2))
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    if a.what == "train":
        from animetag.evaluation.benchmarks import bench_train

        out = bench_train(a.data, profile=a.profile, batch_size=a.batch_size, steps=a.steps,
                          fit_steps=a.fit_steps, image_size=a.image_size, precision=a.precision)
    else:
        from animetag.evaluation.benchmarks import bench_tag

        out = bench_tag(a.run, a.paths, batch_size=a.batch_size)
    print(json.dumps(out, indent=2))
    return 0


def _sample_parser(sub) -> None:
    s = sub.add_parser("sample", help="write the built-in Danbooru-shaped sample dataset")
    s.add_argument("out")
    s.add_argument("--images", type=int, default=600)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--clean", action="store_true", help="no broken records or odd image modes")
    s.add_argument("--detail", action="store_true",
                   help="strokes, shading and grain: JPEGs as heavy as real illustrations (for benchmarks)")
    s.set_defaults(fn=cmd_sample)


def _subset_parser(sub) -> None:
    s = sub.add_parser("subset", help="build a training subset from Danbooru metadata and images")
    s.add_argument("--metadata", nargs="+", required=True, help="JSON/JSON lines/CSV/Parquet files")
    s.add_argument("--images-root", required=True,
                   help="the images: a folder (Danbooru20xx, DeepDanbooru or flat layout), and/or .tar archives "
                        "in it whose members are ID.ext or MD5.ext (read in place, never extracted); or one .tar")
    s.add_argument("--out", required=True)
    s.add_argument("--profile", default="full", choices=sorted(SUBSET_PROFILES))
    s.add_argument("--top-k", type=int, help="tags kept from --categories (default 100; with --tags, 0)")
    s.add_argument("--tags", metavar="FILE",
                   help="keep exactly these tags, of any category (one per line, or comma separated; spaces or "
                        "underscores); with --top-k, beside the top-k. A name on no post is an error naming "
                        "its closest known tags")
    s.add_argument("--top-k-character", type=int,
                   help="characters kept beside them, after the general tags as the WD taggers order them "
                        "(default 0: the thesis setting)")
    s.add_argument("--rating-outputs", action=argparse.BooleanOptionalAction, default=None,
                   help="the four rating outputs first, as the WD taggers have them (default: on)")
    s.add_argument("--rating-scheme", choices=["auto", "current", "legacy"],
                   help="legacy: ratings before 2022, where s meant safe (kept as general); auto (default) "
                        "takes metadata with s but no g as legacy")
    s.add_argument("--max-images", type=int)
    s.add_argument("--image-size", type=int)
    s.add_argument("--categories", help="comma separated, default general")
    s.add_argument("--min-tags", type=int)
    s.add_argument("--ratings", help="keep only these ratings, comma separated subset of g,s,q,e "
                                     "(after a legacy s is read as g)")
    s.add_argument("--exclude-tags", nargs="*")
    s.add_argument("--tag-table", help="a CSV of tag name and category (the WD taggers' selected_tags.csv, or "
                                       "name,category lines) that categorises flat tag strings")
    s.add_argument("--seed", type=int)
    s.add_argument("--splits-from", metavar="SUBSET",
                   help="posts this subset holds keep their split (train, val or test): build the subset of a "
                        "run you fine-tune (--init-from) with its parent's subset here, so that no test image "
                        "is one the parent trained on")
    s.add_argument("--split-by", choices=["family", "random"],
                   help="family (default): parent/child chains, identical files and near-duplicates share a "
                        "split; random: single images (test F1 then flatters the model)")
    s.add_argument("--near-duplicate-bits", type=int, metavar="N",
                   help="perceptual-hash distance (of 256 bits) within which two images are one family "
                        "(default 24; -1: none)")
    s.add_argument("--workers", type=int)
    s.add_argument("--overwrite", action="store_true",
                   help="remove OUT and build it again (refused when OUT holds or lies inside the metadata "
                        "or the images root)")
    s.set_defaults(fn=cmd_subset)


def _train_parser(sub) -> None:
    s = sub.add_parser("train", help="train the ResNet-SE on a built subset (resumes a run)")
    s.add_argument("--data", required=True)
    s.add_argument("--run", required=True)
    s.add_argument("--profile", default="full", choices=sorted(PROFILES))
    s.add_argument("--epochs", type=int)
    s.add_argument("--batch-size", type=int)
    s.add_argument("--image-size", type=int)
    s.add_argument("--backbone", help="a registered backbone (`animetag plugins` lists them and their settings; "
                                      "default resnet_se, the thesis's)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any setting of config.json's train section, e.g. --set model.dropout=0.2 "
                        "--set augment.flip=false --set model.weights=imagenet --set loss_settings.gamma=1 "
                        "(repeatable)")
    s.add_argument("--loss", help="a registered loss (`animetag plugins` lists them; default focal, the thesis's)")
    s.add_argument("--lr", type=float)
    s.add_argument("--init-from", metavar="RUN",
                   help="start from this trained run's weights (same image size and backbone): the tags both "
                        "know keep their outputs, new tags start at their prior (fine-tuning with your tags)")
    s.add_argument("--freeze-backbone-epochs", type=_at_least(0), metavar="N",
                   help="with --init-from: train the head alone for the first N epochs")
    s.add_argument("--precision", choices=["auto", "float32", "mixed_float16", "mixed_bfloat16"])
    s.add_argument("--xla", choices=["auto", "on", "off"],
                   help="XLA compilation under TensorFlow (auto: on a GPU or TPU); under JAX always on")
    g = s.add_argument_group("several processes (KERAS_BACKEND=jax; or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
                             "JAX_PROCESS_ID)")
    g.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address and a free port")
    g.add_argument("--num-processes", type=_at_least(1), metavar="N")
    g.add_argument("--process-id", type=_at_least(0), metavar="I",
                   help="this process (0 writes the run folder; each reads its own share of the shards)")
    s.set_defaults(fn=cmd_train)


def _evaluate_parser(sub) -> None:
    s = sub.add_parser("evaluate", help="metrics, tuned thresholds and the published comparison")
    s.add_argument("--data", help="the subset the run was trained on (with --labels: optional, its validation "
                                  "split tunes the thresholds; default the subset the run records)")
    s.add_argument("--run", required=True)
    s.add_argument("--labels", metavar="FOLDER",
                   help="your own labelled images as the test set: each image with a caption .txt beside it (tags "
                        "comma or space separated); writes RUN/labels/FOLDER_NAME/compare.json")
    s.add_argument("--split", default="test", choices=["val", "test"])
    s.add_argument("--bootstrap", type=_at_least(1), default=1000, help="resamples for the 95%% intervals")
    s.set_defaults(fn=cmd_evaluate)


def _compare_parser(sub) -> None:
    s = sub.add_parser("compare", help="the run beside published taggers on the same images, over shared tags",
                       description="Scores the run and each --tagger on the same images (each reads the original "
                                   "files and prepares them its own way), over the tags both know, under every "
                                   "threshold policy tuned on the same validation images, with paired bootstrap "
                                   "intervals of each tagger's F1 minus the run's.")
    s.add_argument("--run", required=True)
    s.add_argument("--data", help="the run's subset: its test split is scored (and its validation split tunes "
                                  "the thresholds)")
    s.add_argument("--labels", metavar="FOLDER", help="a folder of images with caption .txt files as the test set "
                                                      "instead of the test split")
    s.add_argument("--tagger", action="append", metavar="[NAME=]FOLDER|OWNER/REPO",
                   help="a tagger in the WD layout (model.onnx + selected_tags.csv) or Camie v2's "
                        "(*.onnx + *-metadata.json); a Hugging Face repository id is downloaded. Repeat for more")
    s.add_argument("--aliases", metavar="CSV", help="tag aliases (Danbooru's antecedent_name,consequent_name) "
                                                    "applied to both sides' names")
    s.add_argument("--out", help="folder for compare.json and compare.csv (default RUN/compare)")
    s.add_argument("--bootstrap", type=_at_least(1), default=1000, help="resamples for the 95%% intervals")
    s.add_argument("--batch-size", type=_at_least(1), default=32)
    s.set_defaults(fn=cmd_compare)


def _tag_parser(sub) -> None:
    s = sub.add_parser("tag", help="tag images and folders: captions, CSV or JSON",
                       epilog="exit status: 0 every image tagged (or already captioned); 1 some images unreadable "
                              "(listed), the rest tagged; 2 nothing tagged, or an error before tagging")
    s.add_argument("--run", required=True)
    s.add_argument("paths", nargs="+", help="image files and folders (walked recursively)")
    s.add_argument("--out", help="folder for the outputs (default: captions beside the images)")
    s.add_argument("--format", default="txt", choices=["txt", "csv", "json"])
    s.add_argument("--threshold", type=_probability, help="one global threshold (0 to 1)")
    s.add_argument("--policy", choices=policy_names(),
                   help="the threshold policy (tuned on val by `animetag evaluate`); default: per-tag when "
                        "the run has been evaluated, else 0.5")
    s.add_argument("--thresholds", choices=["tuned"], help=argparse.SUPPRESS)  # older spelling of --policy per-tag
    s.add_argument("--max-tags", type=_at_least(1))
    s.add_argument("--categories", help="comma separated, e.g. general,character")
    s.add_argument("--exclude-tags", nargs="*")
    s.add_argument("--underscores-to-spaces", action="store_true")
    s.add_argument("--escape-parentheses", action="store_true",
                   help="write ( and ) as \\( and \\) (a caption ready for a prompt)")
    s.add_argument("--category-threshold", type=_category_threshold, action="append", metavar="CATEGORY=T",
                   help="a fixed threshold for one category's tags, over the policy's (repeatable: "
                        "--category-threshold character=0.85)")
    s.add_argument("--mcut", action="store_true",
                   help="per image and category, keep the tags above the largest gap in the sorted scores (MCut)")
    s.add_argument("--rating", action=argparse.BooleanOptionalAction, default=False,
                   help="start each caption with the image's rating (general, sensitive, questionable, explicit)")
    s.add_argument("--batch-size", type=_at_least(1), default=32)
    s.add_argument("--overwrite", action="store_true", help="write over existing caption or table files")
    s.set_defaults(fn=cmd_tag)


def _export_parser(sub) -> None:
    s = sub.add_parser("export", help="export a run as ONNX or a SavedModel with selected_tags.csv")
    s.add_argument("--run", required=True)
    s.add_argument("--format", default="onnx", choices=["onnx", "savedmodel"])
    s.add_argument("--out", required=True)
    s.add_argument("--channel-order", default="bgr", choices=["bgr", "rgb"],
                   help="input channel order; bgr (default) is what WD-tagger tools feed")
    s.add_argument("--input-size", type=_at_least(8),
                   help="the side the exported model takes, resized inside to the training size "
                        "(448 for kohya's tag_images_by_wd14_tagger.py); default: the training size")
    s.add_argument("--overwrite", action="store_true",
                   help="remove OUT and export again (refused when OUT holds or lies inside the run folder)")
    s.set_defaults(fn=cmd_export)


def _bench_parser(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks that print ratios measured side by side")
    bsub = bench.add_subparsers(dest="what", required=True)
    s = bsub.add_parser("train", help="input pipeline, training from shards, and in-memory training")
    s.add_argument("--data", required=True)
    s.add_argument("--profile", default="sample", choices=sorted(PROFILES))
    s.add_argument("--batch-size", type=int)
    s.add_argument("--image-size", type=int, help="default: the profile's (full: 256)")
    s.add_argument("--steps", type=int, default=200, help="batches pulled to time the input pipeline")
    s.add_argument("--fit-steps", type=int, help="training steps per timed round (default: 50 on a GPU, 3 on a CPU)")
    s.add_argument("--precision", choices=["float32", "mixed_float16", "mixed_bfloat16"],
                   help="default: the automatic choice (float32 on a CPU)")
    s.set_defaults(fn=cmd_bench)
    s = bsub.add_parser("tag", help="Keras against ONNX Runtime on the same images")
    s.add_argument("--run", required=True)
    s.add_argument("paths", nargs="+")
    s.add_argument("--batch-size", type=int, default=32)
    s.set_defaults(fn=cmd_bench)


def _plugins_parser(sub) -> None:
    s = sub.add_parser("app", help="the tagger as a web page (Gradio): one image, a folder, side by side")
    s.set_defaults(fn=cmd_app)
    s.add_argument("--run", required=True)
    s.add_argument("--compare", action="append", metavar="RUN_OR_TAGGER",
                   help="another run or a WD/Camie tagger beside the run, [NAME=]PATH (repeatable)")
    s.add_argument("--host", default="127.0.0.1", help="the address to serve on (0.0.0.0: every interface)")
    s.add_argument("--port", type=_at_least(1), help="default: 7860, or the next free one")
    s.add_argument("--root", help="the folder whose subfolders the folder tab may tag (default: none)")
    s.add_argument("--share", action="store_true", help="a public gradio.live link as well (off by default)")

    s = sub.add_parser("plugins", help="the registered backbones, losses and threshold policies, with their settings")
    s.set_defaults(fn=cmd_plugins)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="animetag", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_sample_parser, _subset_parser, _train_parser, _evaluate_parser, _compare_parser, _tag_parser,
                _export_parser, _plugins_parser, _bench_parser):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, FloatingPointError, FolderLocked) as e:
        print(f"animetag {args.command}: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        from animetag.tagging.export import ExportNeedsTensorFlow

        if not isinstance(e, ExportNeedsTensorFlow):
            raise
        print(f"animetag {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # missing files, read-only folders, a full disk: the message names the path
        where = f" ({e.filename})" if e.filename and str(e.filename) not in str(e) else ""
        print(f"animetag {args.command}: error: {e}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
