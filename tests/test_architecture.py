"""The package's shape, read from its source: no import circles, imports at the top of a
module unless they save loading TensorFlow/Keras (or an optional library), and the command
line starts without Keras."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "animetag"
# third-party modules that are heavy to load or optional: a function may import them where used
HEAVY = {"tensorflow", "keras", "onnx", "onnxruntime", "tf2onnx", "huggingface_hub", "google", "matplotlib",
         "sklearn", "pyarrow", "iterstrat", "IPython", "imagehash", "gradio", "gradio_client", "playwright",
         "jax", "google_crc32c"}


# The stages a study passes through, in the order data flows: a module may import its own
# stage and those before it, never one after. The foundation is what every stage uses; the
# entry modules (the command line, the app, the notebooks' workspace and Colab helpers) may import
# anything, and nothing in the package imports them.
STAGES = ("foundation", "data", "model", "training", "tagging", "evaluation", "entry")
FOUNDATION = {"settings", "registry", "config", "vocab", "metrics", "folders", "locks"}


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, ast.Module]:
    """Every module of the package by its dotted name below `animetag` (`data.subset`)."""
    return {_name(p): ast.parse(p.read_text(encoding="utf-8")) for p in PACKAGE.rglob("*.py")}


def stage_of(module: str) -> str:
    head = module.split(".")[0]
    if head in STAGES:
        return head
    return "foundation" if head in FOUNDATION else "entry"


def _targets(node: ast.Import | ast.ImportFrom, modules, importer: str = "") -> list[str]:
    """What an import statement loads: `animetag.X.Y` for the package's own modules (a name
    imported from a subpackage counts as that module where it is one)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:  # relative: resolved against the importing module's package
        base = importer.split(".")[: -node.level] if importer else []
        module = ".".join(base + ([node.module] if node.module else []))
    elif (node.module or "").split(".")[0] == "animetag":
        module = node.module.partition(".")[2]
    else:
        return [node.module]
    subs = [f"{module}.{a.name}".lstrip(".") for a in node.names]
    if any(s in modules for s in subs):
        return [f"animetag.{s}" for s in subs if s in modules]
    return [f"animetag.{module}"] if module else []


def _graph(top_level_only: bool = False) -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, tree in modules.items():
        nodes = tree.body if top_level_only else list(ast.walk(tree))
        deps = {t.partition(".")[2] for n in nodes if isinstance(n, (ast.Import, ast.ImportFrom))
                for t in _targets(n, modules, name) if t.startswith("animetag.")}
        graph[name] = deps - {name, ""}
    return graph


def _upward(graph: dict[str, set[str]]) -> list[str]:
    """Every import that goes to a later stage, as `importer (stage) -> imported (stage)`."""
    rank = {s: i for i, s in enumerate(STAGES)}
    return [f"{m} ({stage_of(m)}) -> {d} ({stage_of(d)})" for m, deps in sorted(graph.items())
            for d in sorted(deps) if rank[stage_of(d)] > rank[stage_of(m)]]


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the modules along it, or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return path[path.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_two_modules_import_each_other_directly_or_through_others():
    """Every import counts, those inside functions too: a circle that holds only because one
    side imports late is still a circle."""
    graph = _graph()
    assert len(graph) > 20 and "config" in graph["training.fit"]  # the graph is read, not empty
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_a_planted_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_imports_inside_functions_only_save_loading_tensorflow_keras_or_an_optional_library():
    """Elsewhere an import belongs at the top, where it shows what a module depends on. The
    command line is the exception: each command loads its own module when it runs."""
    modules = _modules()
    top = _graph(top_level_only=True)
    heavy_top = {name: {t.split(".")[0] for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
                        for t in _targets(n, modules, name)} & HEAVY for name, tree in modules.items()}

    def loads_heavy(m: str, seen=()) -> bool:
        return bool(heavy_top.get(m)) or any(loads_heavy(d, seen + (m,)) for d in top.get(m, ()) if d not in seen)

    late = []
    for name, tree in modules.items():
        if name == "cli":
            continue
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for n in ast.walk(fn):
                if isinstance(n, (ast.Import, ast.ImportFrom)):
                    for t in _targets(n, modules, name):
                        own = t.startswith("animetag.") and loads_heavy(t.partition(".")[2])
                        if t.split(".")[0] not in HEAVY and not own:
                            late.append(f"{name}.{fn.name} (line {n.lineno}): {t}")
    assert not late, "\n".join(late)


def test_imports_only_go_down_the_stages():
    """data <- model <- training <- tagging <- evaluation: the tree reads as the data flows."""
    graph = _graph()
    assert {stage_of(m) for m in graph} == set(STAGES)  # every stage has modules
    assert "data.subset" in graph["training.fit"]  # imports inside subpackages are read
    assert not _upward(graph), "\n".join(_upward(graph))


def test_the_stage_check_finds_a_planted_upward_import():
    planted = {"data.subset": {"training.fit", "config"}, "training.fit": {"data.subset"}, "cli": {"evaluation.compare"}}
    assert _upward(planted) == ["data.subset (data) -> training.fit (training)"]


def test_every_module_is_in_a_stage_package_or_named_at_the_top():
    """A new module goes into a stage; the top holds the foundation and the entry modules only."""
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert top == FOUNDATION | {"cli", "notebook", "colab", "app"}
    for s in STAGES[1:-1]:
        doc = ast.get_docstring(_modules()[s]) or ""
        assert doc.startswith(f"Stage {STAGES.index(s)}, {s}:"), s


def test_the_readme_layout_names_every_module_where_it_is():
    """The README's layout section and the tree agree: each module's path is named there."""
    readme = (PACKAGE.parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Layout"):]
    section = section[: section.index("\n## ", 4)]
    for name in _modules():
        if name.split(".")[-1] == "__init__" or name == "":
            continue
        leaf = name.split(".")[-1] + ("/" if (PACKAGE / name.replace(".", "/")).is_dir() else ".py")
        assert leaf in section, f"{name} is not in the README's layout section"


def test_the_command_line_and_the_data_modules_load_without_keras():
    """`animetag --help`, `animetag subset` and the notebooks' data steps never pay for Keras."""
    code = ("import sys\n"
            "import animetag.cli, animetag.data.subset, animetag.notebook, animetag.evaluation.evaluate, animetag.model.policies\n"
            "from animetag.model.policies import names\n"
            "names()\n"
            "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_the_public_surface_resolves_every_name_and_loads_no_keras_until_asked():
    """`from animetag import X` for every public name, in a fresh process: `import animetag`
    alone loads neither Keras nor TensorFlow; each name is the object its module defines; the
    backbone helpers that plug-ins imported from `animetag.model` before the move are still there."""
    code = ("import sys, importlib\n"
            "import animetag\n"
            "before = sorted(m for m in ('keras', 'tensorflow') if m in sys.modules)\n"
            "for name, target in animetag._PUBLIC.items():\n"
            "    module, _, attr = target.partition(':')\n"
            "    mod = importlib.import_module('animetag.' + module)\n"
            "    assert getattr(animetag, name) is (getattr(mod, attr) if attr else mod), name\n"
            "    assert name in dir(animetag)\n"
            "from animetag.model import ResNetSettings, resnet_features\n"
            "from animetag.model.architecture import ResNetSettings as R\n"
            "assert ResNetSettings is R\n"
            "try:\n"
            "    animetag.no_such_name\n"
            "except AttributeError as e:\n"
            "    assert 'no_such_name' in str(e)\n"
            "else:\n"
            "    raise SystemExit('an unknown name resolved')\n"
            "print(before, len(animetag.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    before, n = out.stdout.strip().rsplit(" ", 1)
    assert before == "[]" and int(n) > 40


def _imports_from_animetag(source: str) -> list[tuple[str, list[str]]]:
    """(module, names) of every `from animetag... import` in a piece of Python source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "animetag":
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.split(".")[0] == "animetag"]
    return found


def test_notebooks_and_readme_examples_import_only_the_public_surface():
    import re

    import animetag

    root = PACKAGE.parents[1]
    sources = {p.name: p.read_text(encoding="utf-8") for p in sorted((root / "notebooks").glob("[0-9]*.py"))}
    readme = (root / "README.md").read_text(encoding="utf-8")
    for i, block in enumerate(re.findall(r"```python\n(.*?)```", readme, re.S)):
        sources[f"README block {i}"] = block
    deep, seen = [], set()
    for where, src in sources.items():
        for module, names in _imports_from_animetag(src):
            seen.update(names)
            if module != "animetag" or not set(names) <= set(animetag.__all__):
                deep.append(f"{where}: {module} {names}")
    assert not deep, "\n".join(deep)
    assert {"train", "evaluate", "build_model", "plots", "BACKBONES"} <= seen  # the sources were read
    assert _imports_from_animetag("from animetag.data.subset import read_subset") == [("animetag.data.subset", ["read_subset"])]


def test_the_requirements_file_and_the_package_ask_for_the_same_libraries():
    """A notebook installs the package (pyproject's dependencies), `make` installs
    requirements.txt: a library in one and not the other works here and not on Colab."""
    import re

    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    root = PACKAGE.parents[1]
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    listed = [line.split("#")[0].strip() for line in (root / "requirements.txt").read_text().splitlines()]
    norm = lambda spec: re.sub(r"\s+", "", spec).lower()  # noqa: E731
    assert sorted(map(norm, declared)) == sorted(norm(s) for s in listed if s)
