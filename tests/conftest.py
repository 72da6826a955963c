"""Shared fixtures: the offline data copy, CIFAR-layout pickles written on the fly, CLI runner."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# The one wall-clock bound on a test's subprocess: CI's own limit. A slow or loaded machine makes the
# suite slower, never red; only a hang fails, and CI would stop it there anyway.
CI_LIMIT_S = 1800


def offline_data_root() -> Path | None:
    """The offline copy: $RESNET_REPRO_DATA, else ../shared/data beside the checkout."""
    env = os.environ.get("RESNET_REPRO_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for c in candidates:
        if (c / "cifar-10-batches-py" / "data_batch_1").is_file():
            return c
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = offline_data_root()
    if root is None:
        pytest.skip("offline CIFAR-10 copy not found: set RESNET_REPRO_DATA or place it at ../shared/data")
    return root


def write_cifar_pickles(root: Path, per_file: int = 20, *, test: bool = False, seed: int = 0,
                       filenames: bool = True) -> Path:
    """Write small batches in the official python-pickle layout under root/cifar-10-batches-py."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + (["test_batch"] if test else [])
    for name in names:
        entry = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, per_file).tolist(),
            b"data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
        }
        if filenames:
            entry[b"filenames"] = [f"img_{i}.png".encode() for i in range(per_file)]
        with open(base / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    return base


@pytest.fixture
def cifar_pickles(tmp_path) -> Path:
    write_cifar_pickles(tmp_path)
    return tmp_path


def run_cli(*args: str, cwd: Path, timeout: int = CI_LIMIT_S, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m resnet_repro.train`` with Hydra overrides; progress bars off."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "resnet_repro.train", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env,
    )


TINY_SWEEP_ARGS = (
    "-m", "experiment=degradation", "dataset=synthetic", "trainer.device=cpu", "trainer.progress=false",
    "model.depth=8,14", "seed=0,1", "trainer.batch_size=32", "trainer.eval_batch_size=128",
    "schedule.iterations=40", "schedule.milestones=[20,30]", "trainer.log_every=5",
    "trainer.eval_every=20", "diagnostics.grad_norms=[1,10]",
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
        pytest.skip("the tiny sweep failed; tests/test_sweep.py::test_the_tiny_sweep_fixture_runs says why")
    return sweep
