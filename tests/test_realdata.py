"""ResNet-20 on the real CIFAR-10 (the folder $RESNET_REPRO_DATA names), paper protocol, 200
iterations on the CPU."""

import json

import pandas as pd
import pytest


@pytest.mark.realdata
def test_resnet20_learns_on_real_cifar10(resnet20_real_200, capsys):
    r, run = resnet20_real_200  # the command line's run (conftest.py)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((run / "summary.json").read_text())
    hist = pd.read_csv(run / "metrics.csv")
    assert s["status"] == "completed" and s["params"] == 269_722 and s["protocol"] == "paper"
    assert s["reported_error"] == "validation" and s["test_available"] is False
    assert "no test batch" in s["note"] and "no test batch" in r.stdout + r.stderr
    with capsys.disabled():
        print(
            f"\n[realdata] ResNet-20, paper protocol (45k/5k), 200 iterations at batch 128 on CPU: "
            f"validation error {s['final_val_err']:.2f}% (chance 90%), train error (last 50 it) "
            f"{s['final_train_err']:.2f}%, {s['images_per_s']:.0f} img/s, "
            f"{1000 * 128 / s['images_per_s']:.0f} ms/iteration"
        )
    assert s["final_val_err"] < 75.0, "validation error should be clearly below chance (90%)"
    assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0]
