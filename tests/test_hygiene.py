"""What a clone holds beside the code: the pre-commit hooks the code passes, the licence, the
citation."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .helpers import REPO

BIN = Path(sys.executable).parent  # the tools the dev install brings, beside this interpreter


def test_the_pre_commit_config_runs_ruff_and_nbstripout_from_the_dev_install():
    cfg = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    hooks = {h["id"]: h for repo in cfg["repos"] for h in repo["hooks"]}
    assert set(hooks) == {"ruff-check", "ruff-format", "nbstripout"}
    assert all(h["language"] == "system" for h in hooks.values())  # nothing to download
    dev = (REPO / "pyproject.toml").read_text()
    assert all(f'"{tool}>=' in dev for tool in ("ruff", "pre-commit", "nbstripout"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "check",
    [
        ["ruff", "check", "src", "tests", "benchmarks"],
        ["ruff", "format", "--check", "src", "tests", "benchmarks"],
        ["nbstripout", "--verify", "analysis/degradation.ipynb"],
    ],
    ids=["ruff-check", "ruff-format", "nbstripout"],
)
def test_the_code_passes_each_pre_commit_hook(check):
    tool = BIN / check[0]
    if not tool.exists():
        pytest.skip(
            f"{check[0]} is not installed beside {sys.executable} (pip install -e '.[dev]')"
        )
    r = subprocess.run([str(tool), *check[1:]], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]


def test_a_permissive_licence_and_a_citation_of_the_paper_and_the_project():
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    assert 'license = {text = "MIT"}' in (REPO / "pyproject.toml").read_text()
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["license"] == "MIT"
    paper = cff["preferred-citation"]
    assert (
        paper["title"] == "Deep Residual Learning for Image Recognition" and paper["year"] == 2016
    )
    assert [a["family-names"] for a in paper["authors"]] == ["He", "Zhang", "Ren", "Sun"]
    assert paper["doi"] == "10.1109/CVPR.2016.90"
    readme = (REPO / "README.md").read_text()
    assert "## Citing" in readme and "CITATION.cff" in readme and "LICENSE" in readme
