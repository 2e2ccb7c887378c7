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
         "sklearn", "pyarrow", "iterstrat", "IPython", "imagehash"}


def _modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(encoding="utf-8")) for p in PACKAGE.glob("*.py")}


def _targets(node: ast.Import | ast.ImportFrom, modules) -> list[str]:
    """What an import statement loads: `animetag.X` for the package's own modules."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level or (node.module or "").split(".")[0] == "animetag":
        module = node.module or ""
        if node.module and node.module.startswith("animetag"):
            module = node.module.partition(".")[2]
        if module:
            return [f"animetag.{module.split('.')[0]}"]
        return [f"animetag.{a.name}" for a in node.names if a.name in modules]
    return [node.module]


def _graph(top_level_only: bool = False) -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, tree in modules.items():
        nodes = tree.body if top_level_only else list(ast.walk(tree))
        deps = {t.partition(".")[2] for n in nodes if isinstance(n, (ast.Import, ast.ImportFrom))
                for t in _targets(n, modules) if t.startswith("animetag.")}
        graph[name] = deps - {name, ""}
    return graph


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
    assert len(graph) > 20 and "config" in graph["train"]  # the graph is read, not empty
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
                        for t in _targets(n, modules)} & HEAVY for name, tree in modules.items()}

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
                    for t in _targets(n, modules):
                        own = t.startswith("animetag.") and loads_heavy(t.partition(".")[2])
                        if t.split(".")[0] not in HEAVY and not own:
                            late.append(f"{name}.{fn.name} (line {n.lineno}): {t}")
    assert not late, "\n".join(late)


def test_the_command_line_and_the_data_modules_load_without_keras():
    """`animetag --help`, `animetag subset` and the notebooks' data steps never pay for Keras."""
    code = ("import sys\n"
            "import animetag.cli, animetag.subset, animetag.workspace, animetag.evaluate, animetag.policies\n"
            "from animetag.policies import names\n"
            "names()\n"
            "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
