"""analysis/degradation.ipynb runs top to bottom on a tiny real sweep, so it cannot rot; a relative
RESNET_SWEEP is found from where Jupyter was started, though the kernel runs in analysis/."""

import os
import re

import nbclient
import nbformat
import pytest

from resnet_repro.analysis.results import resolve_sweep

from .helpers import HANG_LIMIT_S, REPO


@pytest.mark.parametrize("named", ["absolute", "relative"])
def test_degradation_notebook_executes_on_a_tiny_sweep(tiny_sweep, monkeypatch, named):
    if named == "absolute":
        monkeypatch.setenv("RESNET_SWEEP", str(tiny_sweep))
    else:  # RESNET_SWEEP=runs/degradation/<time> jupyter ..., from the folder the sweep ran in
        monkeypatch.setenv("PWD", str(tiny_sweep.parents[2]))
        monkeypatch.setenv("RESNET_SWEEP", os.path.join("runs", "degradation", tiny_sweep.name))
    nb = nbformat.read(REPO / "analysis" / "degradation.ipynb", as_version=4)
    nbclient.NotebookClient(
        nb,
        timeout=HANG_LIMIT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(REPO / "analysis")}},
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/markdown", "")) for o in outputs
    )
    assert f"sweep: {tiny_sweep}\n" in text
    assert "| ResNet-14 |" in text and "| plain-8 |" in text  # Table 6
    assert (
        "Verdict: too short to judge" in text and "(1) Deeper plain nets" in text
    )  # the verdict, on 40 iterations
    # the pandas Figure 6 widens its axis to these short runs' errors and counts plain iterations
    axis = re.search(r"error axis 0-(\d+)%, iterations in 'iteration'", text)
    assert axis and int(axis.group(1)) > 20, text[-2000:]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # the pandas plot, Figures 6 and 7, gradient norms
    assert (tiny_sweep / "report" / "fig6.png").is_file()


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Where the user started Jupyter, the repository and the notebook's folder (the kernel's
    cwd)."""
    start, repo = tmp_path / "start", tmp_path / "repo"
    (repo / "analysis").mkdir(parents=True)
    start.mkdir()
    monkeypatch.setenv("PWD", str(start))
    monkeypatch.chdir(repo / "analysis")
    return start, repo


def test_a_relative_sweep_is_looked_up_first_where_jupyter_was_started(places):
    start, repo = places
    for base in places:
        (base / "runs" / "x").mkdir(parents=True)
    assert resolve_sweep("runs/x", repo) == start / "runs" / "x"


def test_a_relative_sweep_is_looked_up_next_in_the_repository(places):
    _, repo = places
    (repo / "runs" / "x").mkdir(parents=True)
    assert resolve_sweep("runs/x", repo) == repo / "runs" / "x"
    assert resolve_sweep("runs/x", str(repo)) == repo / "runs" / "x"


def test_a_relative_sweep_is_looked_up_last_beside_the_notebook(places, monkeypatch):
    _, repo = places
    (repo / "analysis" / "sweep").mkdir()
    monkeypatch.delenv("PWD")  # a front end that sets no PWD
    assert resolve_sweep("sweep", repo) == repo / "analysis" / "sweep"
    assert resolve_sweep("sweep") == repo / "analysis" / "sweep"


def test_an_absolute_sweep_is_taken_as_it_is(places, tmp_path):
    _, repo = places
    (tmp_path / "elsewhere").mkdir()
    assert resolve_sweep(str(tmp_path / "elsewhere"), repo) == tmp_path / "elsewhere"
    assert resolve_sweep(tmp_path / "elsewhere", repo) == tmp_path / "elsewhere"


def test_a_missing_sweep_names_every_path_tried_on_one_line(places, monkeypatch):
    start, repo = places
    with pytest.raises(FileNotFoundError) as ex:
        resolve_sweep("runs/x", repo)
    assert str(ex.value) == (
        f"RESNET_SWEEP=runs/x: no such sweep folder (tried {start}/runs/x, {repo}/runs/x, "
        f"{repo}/analysis/runs/x); give an absolute path or a path relative to where you started "
        f"Jupyter"
    )
    assert "\n" not in str(ex.value)
    monkeypatch.setenv("PWD", str(repo))  # started in the repository: each path once
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"(tried {repo}/runs/x, {repo}/analysis/runs/x);")
    ):
        resolve_sweep("runs/x", repo)
    with pytest.raises(
        FileNotFoundError,
        match=re.escape(f"RESNET_SWEEP={repo}/gone: no such sweep folder (tried {repo}/gone);"),
    ):
        resolve_sweep(repo / "gone", repo)
