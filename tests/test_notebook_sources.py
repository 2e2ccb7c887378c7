"""Each committed .ipynb is what jupytext makes of its .py source, and has no outputs."""

import json
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
NB = sorted((ROOT / "notebooks").glob("[0-9]*.py"))


def _cells(nb):
    return [(c["cell_type"], "".join(c["source"]) if isinstance(c["source"], list) else c["source"],
             sorted(c.get("metadata", {}).get("tags", []))) for c in nb["cells"]]


@pytest.mark.parametrize("py", NB, ids=[p.stem for p in NB])
def test_ipynb_matches_py(py):
    ipynb = py.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} is missing: run `make notebooks`"
    made = json.loads(jupytext.writes(jupytext.read(py), fmt="ipynb"))
    committed = json.loads(ipynb.read_text())
    assert _cells(made) == _cells(committed), f"{ipynb.name} differs from {py.name}: run `make notebooks`"
    for c in committed["cells"]:
        assert not c.get("outputs") and not c.get("execution_count"), f"{ipynb.name} has outputs"
    assert committed["metadata"]["kernelspec"]["name"] == "python3"


def test_every_notebook_has_a_parameters_cell_and_badge():
    for py in NB:
        text = py.read_text()
        assert 'tags=["parameters"]' in text, py.name
        assert f"blob/main/notebooks/{py.stem}.ipynb" in text, py.name


def test_the_demo_runner_flags_tensorflow_log_lines_and_path_reprs():
    import importlib.util

    import nbformat

    spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts" / "run_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    nb = nbformat.v4.new_notebook()
    clean = nbformat.v4.new_code_cell("x")
    clean.outputs = [nbformat.v4.new_output("stream", name="stdout", text="tagged 12 images\n"),
                     nbformat.v4.new_output("execute_result", data={"text/plain": "figure saved: a.png"})]
    noisy = nbformat.v4.new_code_cell("y")
    noisy.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="I0000 00:00:1795.1  42 port.cc:153] oneDNN on\n"),
        nbformat.v4.new_output("execute_result", data={"text/plain": "PosixPath('/data/x.png')"})]
    nb.cells = [clean, noisy]
    found = mod.unwanted_output(nb)
    assert len(found) == 2 and all(f.startswith("cell 1:") for f in found)


def test_form_choices_of_plugins_and_policies_are_registered_names():
    """A Colab form's dropdown is a literal list: each must offer names the registries know,
    so a user never picks one that fails."""
    import ast
    import re

    from animetag.model import policies
    from animetag.registry import BACKBONES, LOSSES

    known = {"LOSS": set(LOSSES.names()), "BACKBONE": set(BACKBONES.names()), "POLICY": set(policies.names())}
    seen = set()
    for py in NB:
        for name, choices in re.findall(r'^(LOSS|BACKBONE|POLICY) = .*# @param (\[.*\])', py.read_text(), re.M):
            assert set(ast.literal_eval(choices)) <= known[name], (py.name, name, choices)
            seen.add(name)
    assert seen == set(known)
    # a plug-in's name can be typed where the list does not offer it
    for py in NB:
        for line in re.findall(r"^(?:LOSS|BACKBONE|POLICY) = .*# @param .*$", py.read_text(), re.M):
            assert line.endswith("{allow-input: true}"), (py.name, line)
