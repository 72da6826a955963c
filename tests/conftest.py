"""Shared fixtures: the data folder, CIFAR-layout pickles written on the fly, the tiny sweep;
which tests are ``slow``.

The plain helpers that test modules import by name (run_cli, smoke_cfg, the file writers...) are in
helpers.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .helpers import REAL_200_ARGS, run_cli, write_cifar_pickles

# The data folder the real-data tests read. It is taken out of the environment for every other test:
# it is also dataset.root's default, and the tests that compose configs or start resnet-train expect
# the plain default (./data) unless they say otherwise.
DATA_FOLDER = os.environ.pop("RESNET_REPRO_DATA", None)


def offline_data_root() -> Path | None:
    """The data folder named by $RESNET_REPRO_DATA, when it holds CIFAR-10."""
    env = DATA_FOLDER
    if env and (Path(env) / "cifar-10-batches-py" / "data_batch_1").is_file():
        return Path(env)
    return None


# --- slow: what `python -m pytest -m "not slow"` (the inner loop, docs/tests.md) leaves out -------
# A test that starts a process (the tools, a benchmark script, a Hydra sweep, the notebook's
# kernel), or that trains for more than a few seconds in the test process (resume, faults, the
# stacked runs against their separate ones, compiled steps), carries @pytest.mark.slow itself (a
# file of nothing else, as pytestmark); these are slow without saying so:
SLOW_MARKERS = ("realdata", "cuda")  # the real data; the CUDA self-check
SLOW_FIXTURES = {  # each starts processes, once per session
    "tiny_sweep_result": "a Hydra sweep of 8 training jobs",
    "resnet20_real_200": "resnet-train on the real data",
}
SLOW_FILES = {"test_gpu_check.py": "runs benchmarks/gpu_check.sh"}


def pytest_collection_modifyitems(items):
    for item in items:
        marked = any(item.get_closest_marker(m) for m in SLOW_MARKERS)
        if marked or SLOW_FIXTURES.keys() & set(item.fixturenames) or item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = offline_data_root()
    if root is None:
        pytest.skip(
            "no CIFAR-10 data folder: set RESNET_REPRO_DATA to a folder holding "
            "cifar-10-batches-py/"
        )
    return root


@pytest.fixture(scope="session")
def resnet20_real_200(data_root, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """``resnet-train`` of ResNet-20, 200 iterations on the real CIFAR-10 (paper protocol, CPU): one
    run, which test_realdata.py checks and test_train_stack.py compares a stacked run with: (the
    process, its run directory)."""
    cwd = tmp_path_factory.mktemp("resnet20_real_200")
    r = run_cli(f"dataset.root={data_root}", *REAL_200_ARGS, cwd=cwd)
    # its folder: the name, then the overrides that make it another recipe than the default
    return (
        r,
        cwd / "runs" / "cifar10" / "resnet20-seed0,trainer.eval_every=200,trainer.log_every=50",
    )


@pytest.fixture
def cifar_pickles(tmp_path) -> Path:
    write_cifar_pickles(tmp_path)
    return tmp_path


TINY_SWEEP_ARGS = (
    "-m",
    "experiment=degradation",
    "dataset=synthetic",
    "trainer.device=cpu",
    "trainer.progress=false",
    "model.depth=8,14",
    "seed=0,1",
    "trainer.batch_size=32",
    "trainer.eval_batch_size=128",
    "schedule.iterations=40",
    "schedule.milestones=[20,30]",
    "trainer.log_every=5",
    "trainer.eval_every=20",
    "diagnostics.grad_norms=[1,10]",
)


@pytest.fixture(scope="session")
def tiny_sweep_result(tmp_path_factory) -> tuple[Path | None, str | None]:
    """A real degradation sweep, shrunk: plain/residual x depth 8/14 x seeds 0/1 on synthetic data.

    (the sweep folder, None), or (None, why it failed): the why is reported once, by
    ``test_sweep.py::test_the_tiny_sweep_fixture_runs``, not by every test that uses the sweep.
    """
    cwd = tmp_path_factory.mktemp("tiny_sweep")
    try:
        r = run_cli(*TINY_SWEEP_ARGS, cwd=cwd)
    except subprocess.TimeoutExpired as ex:
        return None, f"the sweep ran past {ex.timeout} s"
    if r.returncode != 0:
        return None, f"the sweep exited with {r.returncode}: {r.stderr[-3000:]}"
    (sweep,) = (cwd / "runs" / "degradation").iterdir()
    return sweep, None


@pytest.fixture(scope="session")
def tiny_sweep(tiny_sweep_result) -> Path:
    sweep, why = tiny_sweep_result
    if why is not None:
        pytest.skip(
            "the tiny sweep failed; tests/test_sweep.py::test_the_tiny_sweep_fixture_runs says why"
        )
    return sweep
