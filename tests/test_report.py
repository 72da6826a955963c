"""The report: Table 6 against hand computations, the verdict, and the files resnet-report
writes."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from resnet_repro.analysis.report import table6, table6_markdown, verdict, write_report
from resnet_repro.analysis.results import collect
from resnet_repro.errors import ResnetReproError

from .helpers import (
    DONE_RESNET,
    HANG_LIMIT_S,
    SWEEP_NAME,
    make_mixed_sweep,
    metric_rows,
    run_name,
    write_manifest,
    write_run,
)


def fabricate(sweep: Path, runs: list[dict]) -> pd.DataFrame:
    """Write a sweep of the given runs (write_run keyword arguments) and collect its runs frame."""
    write_manifest(
        sweep,
        [
            {
                "depth": r["depth"],
                "residual": r["residual"],
                "seed": r["seed"],
                "status": r.get("status", "completed"),
            }
            for r in runs
        ],
    )
    for r in runs:
        write_run(
            sweep / run_name(r["depth"], r["residual"], r["seed"]), metrics=metric_rows(), **r
        )
    return collect(sweep).runs


def table_runs(reported_error: str = "validation") -> list[dict]:
    """ResNet-20 x3 seeds (+1 failed), plain-20 x1, plain-56 x2; test errors = val errors + 0.5."""
    spec = [  # depth, residual, seed, train, val, status
        (20, True, 0, 2.0, 8.0, "completed"),
        (20, True, 1, 3.0, 9.0, "completed"),
        (20, True, 2, 4.0, 10.0, "completed"),
        (20, True, 3, 0.5, 1.0, "failed"),  # would pull the mean down if counted
        (20, False, 0, 5.0, 11.0, "completed"),
        (56, False, 0, 7.0, 14.0, "completed"),
        (56, False, 1, 9.0, 16.0, "completed"),
    ]
    return [
        dict(
            depth=d,
            residual=r,
            seed=s,
            final_train_err=tr,
            final_val_err=va,
            status=st,
            final_test_err=va + 0.5 if reported_error == "test" else None,
            reported_error=reported_error,
            params=270_000 if r else 269_000,
            error="RuntimeError: boom" if st == "failed" else None,
        )
        for d, r, s, tr, va, st in spec
    ]


def net(t: pd.DataFrame, name: str) -> pd.Series:
    (row,) = [r for _, r in t.iterrows() if r["net"] == name]
    return row


def test_table6_equals_a_hand_computation(tmp_path):
    t = table6(fabricate(tmp_path / SWEEP_NAME, table_runs()))
    assert t["net"].tolist() == ["plain-20", "plain-56", "ResNet-20"]  # plain first, by depth
    assert set(t["split"]) == {"val"}

    r20 = net(t, "ResNet-20")
    assert (r20["seeds"], r20["unfinished"]) == (3, 1)
    assert r20["error_mean"] == pytest.approx(9.0)
    assert r20["error_std"] == pytest.approx(1.0)  # ddof=1 over 8/9/10
    assert r20["train_error_mean"] == pytest.approx(3.0)
    assert r20["train_error_std"] == pytest.approx(1.0)
    assert r20["paper_test_error"] == pytest.approx(8.75)
    assert r20["params"] == 270_000

    p20 = net(t, "plain-20")
    assert (p20["seeds"], p20["unfinished"]) == (1, 0)
    assert p20["error_mean"] == pytest.approx(11.0)
    assert math.isnan(p20["error_std"])
    assert p20["paper_test_error"] is None or pd.isna(p20["paper_test_error"])

    p56 = net(t, "plain-56")
    assert (p56["seeds"], p56["unfinished"]) == (2, 0)
    assert p56["error_mean"] == pytest.approx(15.0)
    assert p56["error_std"] == pytest.approx(np.std([14.0, 16.0], ddof=1))
    assert p56["train_error_mean"] == pytest.approx(8.0)
    assert p56["paper_test_error"] is None or pd.isna(p56["paper_test_error"])


def test_table6_markdown_says_validation_error_and_shows_mean_pm_std(tmp_path):
    t = table6(fabricate(tmp_path / SWEEP_NAME, table_runs()))
    md = table6_markdown(t, "40 iterations per run")
    lines = md.splitlines()
    header = lines[0]
    assert "ours: validation error (%)" in header
    assert "ours: test error" not in md
    assert "paper: test error (%)" in header
    (r20,) = [ln for ln in lines if ln.startswith("| ResNet-20 |")]
    cells = [c.strip() for c in r20.strip("|").split("|")]
    assert cells == [
        "ResNet-20",
        "0.27M",
        "3 (+1 unfinished)",
        "9.00 ± 1.00",
        "3.00 ± 1.00",
        "8.75",
    ]
    (p20,) = [ln for ln in lines if ln.startswith("| plain-20 |")]
    cells = [c.strip() for c in p20.strip("|").split("|")]
    assert cells[2:] == ["1", "11.00", "5.00", "—"]  # one seed: no std; the paper has no plain nets
    (p56,) = [ln for ln in lines if ln.startswith("| plain-56 |")]
    assert "15.00 ± 1.41" in p56
    assert "validation error" in md.lower()
    assert "40 iterations per run" in md


def test_table6_with_test_errors_says_test(tmp_path):
    runs = fabricate(tmp_path / SWEEP_NAME, table_runs("test"))
    assert (runs["final_err"].dropna() == runs["final_test_err"].dropna()).all()
    t = table6(runs)
    assert set(t["split"]) == {"test"}
    r20 = net(t, "ResNet-20")
    assert r20["error_mean"] == pytest.approx(9.5)  # the test errors, not the validation ones
    assert r20["error_std"] == pytest.approx(1.0)
    md = table6_markdown(t)
    assert "ours: test error (%)" in md.splitlines()[0]
    assert "ours: validation error" not in md
    assert "9.50 ± 1.00" in md


def test_table6_never_calls_validation_error_test_error(tmp_path):
    """One run without a test split: the whole table is validation error."""
    spec = table_runs("test")
    spec[0].update(reported_error="validation", final_test_err=None)
    t = table6(fabricate(tmp_path / SWEEP_NAME, spec))
    assert set(t["split"]) == {"val"}
    assert net(t, "ResNet-20")["error_mean"] == pytest.approx(9.0)
    assert "ours: validation error (%)" in table6_markdown(t)


def test_table6_counts_pending_jobs_as_unfinished(tmp_path):
    sweep = tmp_path / SWEEP_NAME
    fabricate(sweep, table_runs())
    write_manifest(
        sweep,
        [
            {
                "depth": r["depth"],
                "residual": r["residual"],
                "seed": r["seed"],
                "status": r["status"],
            }
            for r in table_runs()
        ]
        + [{"depth": 56, "residual": True, "seed": 0, "status": "pending"}],
    )
    runs = collect(sweep).runs
    t = table6(runs)
    r56 = net(t, "ResNet-56")
    assert (r56["seeds"], r56["unfinished"]) == (0, 1)
    assert math.isnan(r56["error_mean"])
    (line,) = [ln for ln in table6_markdown(t).splitlines() if ln.startswith("| ResNet-56 |")]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2:] == ["0 (+1 unfinished)", "—", "—", "6.97"]


def test_table6_markdown_of_a_net_without_params_shows_a_dash(tmp_path):
    sweep = tmp_path / SWEEP_NAME
    fabricate(sweep, table_runs())
    write_manifest(
        sweep,
        [
            {
                "depth": r["depth"],
                "residual": r["residual"],
                "seed": r["seed"],
                "status": r["status"],
            }
            for r in table_runs()
        ]
        + [{"depth": 56, "residual": True, "seed": 0, "status": "pending"}],
    )
    md = table6_markdown(table6(collect(sweep).runs))
    (line,) = [ln for ln in md.splitlines() if ln.startswith("| ResNet-56 |")]
    assert [c.strip() for c in line.strip("|").split("|")][:2] == ["ResNet-56", "—"]
    assert "nan" not in md


def degradation_runs(
    plain_train: dict, resnet_val: dict, iterations_total: int = 64_000
) -> list[dict]:
    """Two seeds per net; the errors of the seeds are the given value ± 1 (so the means are the
    values). Plain nets' validation error is 20 ± 1, ResNets' training error 1 ± 0.2. At 64,000
    iterations the records claim the paper's whole schedule."""
    out = []
    for residual, values in ((False, plain_train), (True, resnet_val)):
        for depth, v in values.items():
            for seed, delta in ((0, -1.0), (1, 1.0)):
                train, val = (
                    (v + delta, 20.0 + delta) if not residual else (1.0 + delta / 5, v + delta)
                )
                out.append(
                    dict(
                        depth=depth,
                        residual=residual,
                        seed=seed,
                        final_train_err=train,
                        final_val_err=val,
                        iterations_total=iterations_total,
                        iterations=iterations_total,
                    )
                )
    return out


PAPER_LIKE = ({20: 5.0, 32: 9.0, 56: 13.0}, {20: 13.0, 32: 9.0, 56: 5.0})


def test_verdict_on_the_papers_schedule_judges_each_claim_with_its_numbers(tmp_path):
    text = verdict(fabricate(tmp_path / SWEEP_NAME, degradation_runs(*PAPER_LIKE)))
    lines = text.splitlines()
    assert lines[0] == "Verdict: the degradation problem is reproduced."
    assert lines[1].startswith("Recipe: the paper's schedule (64,000 iterations")
    assert lines[2].startswith(
        "(1) Deeper plain nets have higher training error (every adjacent pair of depths): "
        "reproduced. training error: plain-20 5.00% → plain-32 9.00% (Δ +4.00 ± 1.41 s.e.); "
        "plain-32 9.00% → plain-56 13.00% (Δ +4.00 ± 1.41 s.e.)."
    )
    assert lines[3].startswith(
        "(2) At every depth the ResNet's training and validation error are below the plain "
        "net's: reproduced. depth 20 training: ResNet 1.00% vs plain 5.00% (Δ -4.00 ± 1.02 s.e.); "
        "depth 20 validation: ResNet 13.00% vs plain 20.00% (Δ -7.00 ± 1.41 s.e.)"
    )
    assert lines[4].startswith(
        "(3) Deeper ResNets have lower validation error (every adjacent pair of depths): "
        "reproduced. validation error: ResNet-20 13.00% → ResNet-32 9.00% (Δ -4.00 ± 1.41 s.e.)"
    )
    assert "Based on 12 finished runs (2 seed(s) per net), 64,000 iterations each" in text


@pytest.mark.parametrize(
    ("plain_train", "resnet_val", "failing"),
    [
        (
            {20: 5.0, 32: 13.0, 56: 9.0},
            PAPER_LIKE[1],
            1,
        ),  # one adjacent pair of plain nets the other way
        (
            PAPER_LIKE[0],
            {20: 30.0, 32: 26.0, 56: 22.0},
            2,
        ),  # ResNets above the plain nets' validation error
        (PAPER_LIKE[0], {20: 5.0, 32: 9.0, 56: 13.0}, 3),  # deeper ResNets worse
    ],
)
def test_verdict_not_reproduced_names_the_failing_claim(tmp_path, plain_train, resnet_val, failing):
    lines = verdict(
        fabricate(tmp_path / SWEEP_NAME, degradation_runs(plain_train, resnet_val))
    ).splitlines()
    assert lines[0] == "Verdict: the degradation problem is NOT reproduced: see the claims below."
    assert f"({failing}) " in lines[1 + failing] and ": not reproduced." in lines[1 + failing]
    assert "(the other way)" in lines[1 + failing] or failing == 2


def test_verdict_within_the_noise_of_the_seeds_is_inconclusive(tmp_path):
    # ResNets: 7 ± 1.41 vs 9 ± 1.41 over two seeds each: Δ -2.00 is within 2 s.e. (2.83)
    text = verdict(
        fabricate(tmp_path / SWEEP_NAME, degradation_runs({20: 5.0, 56: 9.0}, {20: 9.0, 56: 7.0}))
    )
    assert text.splitlines()[0].startswith(
        "Verdict: inconclusive: a difference is within the noise of the seeds"
    )
    assert (
        "(3) Deeper ResNets have lower validation error (every adjacent pair of depths): "
        "inconclusive." in text
    )
    assert "(within the noise)" in text


def test_a_short_sweep_is_too_short_to_judge_and_says_what_differs(tmp_path):
    text = verdict(
        fabricate(tmp_path / SWEEP_NAME, degradation_runs(*PAPER_LIKE, iterations_total=40))
    )
    lines = text.splitlines()
    assert lines[0] == (
        "Verdict: too short to judge: these runs are not on the paper's schedule (the numbers "
        "below are as measured)."
    )
    assert lines[1] == (
        "Recipe: not the paper's schedule: 40 iterations (the paper: 64,000); lr lowered at 20, 30 "
        "(the paper: 32,000, 48,000); batch 32 (the paper: 128)."
    )
    assert all(": too short to judge. " in ln for ln in lines[2:5])
    assert "plain-20 5.00% → plain-32 9.00%" in text  # the numbers, as measured


def test_an_unfinished_net_makes_its_claims_too_short_to_judge(tmp_path):
    runs = [
        r for r in degradation_runs(*PAPER_LIKE) if not (r["depth"] == 56 and not r["residual"])
    ]
    runs += [
        dict(
            depth=56,
            residual=False,
            seed=s,
            status="running",
            final_train_err=None,
            final_val_err=None,
            iterations=1000,
            iterations_total=64_000,
        )
        for s in (0, 1)
    ]
    lines = verdict(fabricate(tmp_path / SWEEP_NAME, runs)).splitlines()
    assert lines[0] == "Verdict: too short to judge: nets it compares have not finished."
    assert ": too short to judge. " in lines[2] and ": too short to judge. " in lines[3]
    assert lines[4].startswith("(3) ") and ": reproduced. " in lines[4]


def test_verdict_with_one_seed_says_there_is_no_noise_estimate(tmp_path):
    runs = [r for r in degradation_runs(*PAPER_LIKE) if r["seed"] == 0]
    text = verdict(fabricate(tmp_path / SWEEP_NAME, runs))
    assert text.splitlines()[0] == "Verdict: the degradation problem is reproduced."
    assert "s.e." not in text and "one seed per net, so there is no noise estimate" in text


def test_the_same_net_and_seed_twice_is_refused(tmp_path):
    runs = degradation_runs({20: 5.0, 56: 9.0}, {20: 9.0, 56: 5.0})
    fabricate(tmp_path / "a" / SWEEP_NAME, runs)
    fabricate(tmp_path / "b" / SWEEP_NAME, runs[:1])
    with pytest.raises(ResnetReproError, match="plain-20 seed 0 finished more than once"):
        write_report([tmp_path / "a", tmp_path / "b"], tmp_path / "rep")
    assert (
        collect([tmp_path / "a", tmp_path / "b"]).runs["run"].is_unique
    )  # labels keep the roots apart
    assert len(collect([tmp_path / "a", tmp_path / "a" / SWEEP_NAME]).runs) == len(
        runs
    )  # each run once


@pytest.mark.slow
def test_two_sweeps_that_differ_in_a_list_value_are_refused_in_one_line(tmp_path):
    import yaml

    fabricate(tmp_path / "a" / SWEEP_NAME, degradation_runs({20: 5.0}, {20: 9.0}))
    fabricate(tmp_path / "b" / SWEEP_NAME, degradation_runs({56: 9.0}, {56: 5.0}))
    for cfg in (tmp_path / "b").rglob("config.yaml"):
        c = yaml.safe_load(cfg.read_text())
        c["schedule"]["milestones"] = [8000, 12000]
        cfg.write_text(yaml.safe_dump(c))
    with pytest.raises(ResnetReproError) as e:
        write_report([tmp_path / "a", tmp_path / "b"], tmp_path / "rep")
    assert "do not share one recipe (schedule.milestones: [32000, 48000], [8000, 12000])" in str(
        e.value
    )
    assert "\n" not in str(e.value)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "resnet_repro.analysis.report",
            str(tmp_path / "a"),
            str(tmp_path / "b"),
            "-o",
            str(tmp_path / "rep"),
        ],
        capture_output=True,
        text=True,
        timeout=HANG_LIMIT_S,
    )
    assert (
        r.returncode == 2
        and "Traceback" not in r.stderr
        and len(r.stderr.strip().splitlines()) == 1
    )


def test_verdict_with_one_depth_gives_no_verdict(tmp_path):
    runs = fabricate(tmp_path / SWEEP_NAME, degradation_runs({20: 5.0}, {20: 9.0}))
    text = verdict(runs)
    assert (
        text.splitlines()[0]
        == "Verdict: the degradation problem is reproduced on the claims it could assess (1 of 3)."
    )
    assert (
        "(1) Deeper plain nets have higher training error (every adjacent pair of depths): not "
        "assessed." in text
    )
    assert (
        "(3) Deeper ResNets have lower validation error (every adjacent pair of depths): not "
        "assessed." in text
    )


def test_a_short_sweeps_report_says_so_at_the_top_of_every_file(tmp_path):
    sweep = tmp_path / SWEEP_NAME
    fabricate(sweep, degradation_runs(*PAPER_LIKE, iterations_total=40))
    files = write_report(sweep, tmp_path / "rep")
    short = "Recipe: not the paper's schedule: 40 iterations (the paper: 64,000)"
    assert files["table6_md"].read_text().startswith(short)
    assert (
        "| paper, 64k iterations: test error (%), reference only |"
        in files["table6_md"].read_text()
    )
    assert (
        "a reference they cannot be compared with, not a comparison"
        in files["table6_md"].read_text()
    )
    assert files["verdict"].read_text().splitlines()[1].startswith(short)
    assert files["report"].read_text().splitlines()[2].startswith(f"**{short}")
    full = tmp_path / "full" / SWEEP_NAME
    fabricate(full, degradation_runs(*PAPER_LIKE))
    files = write_report(full, tmp_path / "rep_full")
    assert files["table6_md"].read_text().startswith("Recipe: the paper's schedule")
    assert "| paper: test error (%) |" in files["table6_md"].read_text()


def test_figure6_widens_its_axis_to_data_above_20_percent_and_says_so(tmp_path):
    from resnet_repro.analysis.report import build_figure6, recipe

    sweep = tmp_path / SWEEP_NAME
    fabricate(sweep, degradation_runs(*PAPER_LIKE, iterations_total=40))  # metric rows at 42.5-53%
    runs, history = collect(sweep)
    fig = build_figure6(history, runs)
    axes = fig.axes
    assert axes[0].get_ylim() == (0.0, 60.0) and all(ax.lines for ax in axes)
    texts = " ".join(t.get_text() for t in fig.texts) + fig._suptitle.get_text()
    assert "axis widened to 0-60%: these curves reach 53%, above the paper's 0-20%" in texts
    assert "40 iterations: not the paper's schedule" in texts
    # a short run reads in plain iterations, not as 0.001-0.004 of 1e4
    assert axes[0].get_xlabel() == "iteration" and 30 <= axes[0].get_xlim()[1] <= 45
    out = tmp_path / "fig"
    out.mkdir()
    from resnet_repro.analysis.report import figure6

    png = figure6(history, runs, out, recipe(runs))[0]
    img = (mpimg.imread(png)[..., :3] * 255).astype(int)
    half = img.shape[1] // 2
    for panel in (img[:, :half], img[:, half:]):  # the curves' colours in both panels
        blue = (abs(panel - np.array([31, 119, 180])).sum(-1) < 40).sum()
        assert blue > 50


def test_figure6_keeps_the_papers_axis_when_the_data_fit(tmp_path):
    from resnet_repro.analysis.report import build_figure6

    sweep = tmp_path / SWEEP_NAME
    runs = degradation_runs(*PAPER_LIKE)
    write_manifest(
        sweep, [{"depth": r["depth"], "residual": r["residual"], "seed": r["seed"]} for r in runs]
    )
    for r in runs:
        write_run(
            sweep / run_name(r["depth"], r["residual"], r["seed"]),
            metrics=metric_rows(
                iters=(16_000, 32_000, 48_000, 64_000), eval_every=16_000, base=15.0
            ),
            **r,
        )
    runs, history = collect(sweep)
    fig = build_figure6(history, runs)
    assert fig.axes[0].get_ylim() == (0.0, 20.0)
    assert fig.axes[0].get_xlabel() == "iter. (1e4)"  # the paper's unit at its schedule
    assert "the paper's axis (0-20%)" in " ".join(t.get_text() for t in fig.texts)
    assert "64,000 iterations, the paper's schedule" in fig._suptitle.get_text()


def test_figure6_axes_read_naturally_at_every_schedule_length():
    from resnet_repro.analysis.report import fig6_top, iteration_axis

    assert iteration_axis(200) == (1.0, "iteration")
    assert iteration_axis(8_000) == (1e3, "iter. (1e3)")  # the 1/8 schedule reads 0-8
    assert iteration_axis(64_000) == (1e4, "iter. (1e4)")  # the paper's 0-6.4
    assert fig6_top(12.0) == 20.0 and fig6_top(53.0) == 60.0 and fig6_top(99.5) == 100.0


def test_figure7_shows_every_finished_depth_with_legends_integer_ticks_and_markers(tmp_path):
    from resnet_repro.analysis.report import build_figure7
    from resnet_repro.analysis.results import collect_layer_stats

    sweep = tmp_path / SWEEP_NAME
    write_manifest(
        sweep,
        [{"depth": d, "residual": r, "seed": 0} for d in (20, 32, 56, 110) for r in (True, False)],
    )
    for d in (20, 32, 56, 110):
        for r in (True, False):
            write_run(
                sweep / run_name(d, r, 0),
                depth=d,
                residual=r,
                seed=0,
                layer_stats=True,
                metrics=metric_rows(),
            )
    fig = build_figure7(collect_layer_stats(sweep))
    top, bottom = fig.axes
    for ax in (top, bottom):
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == [f"{v}-{d}" for v in ("plain", "ResNet") for d in (20, 32, 56, 110)]
        assert all(float(t).is_integer() for t in ax.get_xticks())
    markers = {
        line.get_label(): (line.get_marker(), line.get_markerfacecolor()) for line in top.lines
    }
    assert markers["plain-20"][0] != markers["ResNet-20"][0]  # told apart without the dashes
    assert "final weights, iteration 40" in top.get_title()


def test_gradient_norms_of_finished_runs_relative_to_the_weights(tmp_path):
    from resnet_repro.analysis.report import GRAD_CAPTION, build_figure_grad_norms
    from resnet_repro.analysis.results import collect_grad_norms

    sweep = tmp_path / SWEEP_NAME
    write_manifest(sweep, [{"depth": 20, "residual": r, "seed": 0} for r in (True, False)])
    write_run(
        sweep / run_name(20, True, 0),
        depth=20,
        residual=True,
        seed=0,
        grad_norms=(1, 10),
        metrics=metric_rows(),
    )
    write_run(
        sweep / run_name(20, False, 0),
        depth=20,
        residual=False,
        seed=0,
        grad_norms=(1, 10),
        status="running",
        metrics=metric_rows(),
    )
    norms = collect_grad_norms(sweep)
    fig = build_figure_grad_norms(norms)
    labels = {line.get_label() for ax in fig.axes for line in ax.lines}
    assert labels == {"ResNet-20"}  # the unfinished plain run is left out, as everywhere else
    (rel, raw) = (fig.axes[0], fig.axes[len(fig.axes) // 2])
    assert "‖g‖ / ‖W‖" in rel.get_ylabel() and "‖∂loss/∂W‖" in raw.get_ylabel()
    assert "weights before its update" in rel.get_title()
    assert GRAD_CAPTION in " ".join(t.get_text() for t in fig.texts)


def test_write_report_of_runs_in_every_state(tmp_path):
    """Failed, running, pending and half-written runs: the report is written, they are counted."""
    sweep = make_mixed_sweep(tmp_path / SWEEP_NAME)
    # its two finished runs have different learning rates: pooling them is refused, by name
    with pytest.raises(ResnetReproError, match=r"optimizer.lr: 0.05, 0.1"):
        write_report(sweep, tmp_path / "rep")
    cfg = sweep / DONE_RESNET / "config.yaml"
    cfg.write_text(cfg.read_text().replace("lr: 0.05", "lr: 0.1"))
    files = write_report(sweep, tmp_path / "rep")
    md = files["report"].read_text()
    assert "Runs: 2 completed, 1 failed, 1 pending, 2 running." in md
    t = pd.read_csv(files["table6_csv"])
    assert dict(zip(t["net"], t["seeds"], strict=True)) == {
        "plain-20": 1,
        "plain-56": 0,
        "ResNet-20": 1,
        "ResNet-32": 0,
        "ResNet-56": 0,
    }
    assert dict(zip(t["net"], t["unfinished"], strict=True)) == {
        "plain-20": 0,
        "plain-56": 2,
        "ResNet-20": 0,
        "ResNet-32": 1,
        "ResNet-56": 1,
    }
    assert set(t["split"]) == {"val"}  # one completed run had no test split
    assert "not assessed" in files["verdict"].read_text()
    assert files["fig6_png"].is_file() and "fig7_png" not in files and "grad_norms_png" not in files
    assert "fig7.png" not in md


# --- the report folder of the real (shrunk) sweep -------------------------------------------------
REPORT_FILES = (
    "table6.md",
    "table6.csv",
    "runs.csv",
    "runs.md",
    "fig6.png",
    "fig6.pdf",
    "fig7.png",
    "fig7.pdf",
    "grad_norms.png",
    "grad_norms.pdf",
    "verdict.txt",
    "report.md",
)


def report_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "resnet_repro.analysis.report", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=HANG_LIMIT_S,
    )


def listing(d: Path) -> set[str]:
    return {p.relative_to(d).as_posix() for p in d.rglob("*")}


@pytest.fixture(scope="module")
def cli_report(tiny_sweep, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, set, set]:
    out = tmp_path_factory.mktemp("report") / "out"
    before = listing(tiny_sweep)
    r = report_cli(str(tiny_sweep), "-o", str(out), cwd=out.parent)
    return out, r, before, listing(tiny_sweep)


def test_report_cli_writes_every_file(cli_report, tiny_sweep):
    out, r, before, after = cli_report
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    for name in REPORT_FILES:
        assert (out / name).is_file(), name
        assert (out / name).stat().st_size > 0, name
    # the sweep's manifest, under a name that collecting the report folder cannot take for a sweep
    manifest_copy = out / "sweep_manifest.csv"
    assert manifest_copy.read_text() == (tiny_sweep / "manifest.csv").read_text()
    assert after == before  # -o: nothing written into the sweep
    assert f"wrote {len(list(out.iterdir()))} files to {out}" in r.stdout
    assert (out / "verdict.txt").read_text() in r.stdout
    # a real 40-iteration sweep: never judged against the paper's 64k-iteration numbers
    assert r.stdout.startswith(
        "Verdict: too short to judge: these runs are not on the paper's schedule"
    )
    assert (
        "Recipe: not the paper's schedule: 40 iterations (the paper: 64,000)"
        in (out / "report.md").read_text()
    )
    t = pd.read_csv(out / "table6.csv")
    assert t["net"].tolist() == ["plain-8", "plain-14", "ResNet-8", "ResNet-14"]
    assert (t["seeds"] == 2).all() and (t["unfinished"] == 0).all()
    assert len(pd.read_csv(out / "runs.csv")) == 8
    for name in ("fig6.pdf", "fig7.pdf", "grad_norms.pdf"):
        assert (out / name).read_bytes().startswith(b"%PDF"), name


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("fig6.png", (1650, 705)),  # (11.0, 4.7) in at 150 dpi: the paper's panels and a caption
        ("fig7.png", (1650, 1050)),  # (11.0, 7.0) in
        (
            "grad_norms.png",
            (1230, 1200),
        ),  # iterations 1 and 10, relative and raw: (3.6 * 2 + 1, 3.6 * 2 + 0.8) in
    ],
)
def test_report_figures_have_their_size_and_are_not_blank(cli_report, name, size):
    out, r, _, _ = cli_report
    assert r.returncode == 0, r.stderr[-3000:]
    img = mpimg.imread(out / name)
    h, w = img.shape[:2]
    assert (w, h) == size
    rgb = img[..., :3].reshape(-1, 3)
    q = (rgb * 255).round().astype(np.uint32)
    colours = np.unique((q[:, 0] << 16) | (q[:, 1] << 8) | q[:, 2])
    assert len(colours) > 50, f"{name}: {len(colours)} colours"
    assert rgb.std() > 0.05
    assert (rgb < 0.5).mean() > 0.005  # some ink: lines, text


@pytest.mark.slow
def test_report_cli_nonexistent_path_is_one_error_line(tmp_path):
    r = report_cli(str(tmp_path / "no-such-sweep"), cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("resnet-report: error: ")
    assert "no-such-sweep" in lines[0]
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_report_cli_empty_folder_is_one_error_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = report_cli(str(empty), cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("resnet-report: error: ")
    assert "Traceback" not in r.stderr
    assert list(empty.iterdir()) == []  # no half-made report folder


def test_write_report_md_references_figures_and_table(tiny_sweep, tmp_path):
    files = write_report(tiny_sweep, tmp_path / "rep")
    out = tmp_path / "rep"
    for role in (
        "table6_md",
        "table6_csv",
        "runs_csv",
        "fig6_png",
        "fig6_pdf",
        "fig7_png",
        "fig7_pdf",
        "grad_norms_png",
        "grad_norms_pdf",
        "verdict",
        "manifest",
        "report",
    ):
        assert files[role].is_file(), role
        assert files[role].parent == out, role
    md = (out / "report.md").read_text()
    for fig in ("fig6.png", "fig7.png", "grad_norms.png"):
        assert f"]({fig})" in md, fig
        assert (out / fig).is_file()
    table = (out / "table6.md").read_text()
    assert table.splitlines()[0] in md  # the table itself, not only a link
    assert "| ResNet-14 |" in md and "| plain-8 |" in md
    assert (out / "verdict.txt").read_text().strip() in md
    assert "8 completed" in md


def test_write_report_into_the_sweep_can_be_rerun(tiny_sweep, tmp_path):
    """The default report folder sits inside the sweep; collecting the sweep again ignores it."""
    sweep = tmp_path / tiny_sweep.name
    shutil.copytree(
        tiny_sweep, sweep, ignore=shutil.ignore_patterns("checkpoint.pt", "*.log", ".hydra")
    )
    files = write_report(sweep)
    assert files["report"] == sweep / "report" / "report.md"
    before = (sweep / "report" / "table6.csv").read_text()
    runs = collect(sweep).runs
    assert len(runs) == 8 and (runs["status"] == "completed").all()
    assert runs["job"].notna().all()  # the moved sweep's manifest still matches its runs
    write_report(sweep)
    assert (sweep / "report" / "table6.csv").read_text() == before


def test_an_unwritable_report_folder_is_one_clear_error(tiny_sweep, tmp_path, capsys):
    from resnet_repro.analysis.report import main

    (tmp_path / "afile").write_text("x")
    with pytest.raises(SystemExit) as ex:
        main([str(tiny_sweep), "-o", str(tmp_path / "afile" / "rep")])
    err = capsys.readouterr().err
    assert ex.value.code == 2 and err.startswith("resnet-report: error: Cannot write the report to")
    assert "Choose a writable folder with -o" in err and "Traceback" not in err


def test_collection_survives_files_that_are_not_what_they_seem(tmp_path):
    sweep = tmp_path / SWEEP_NAME
    runs = fabricate(sweep, degradation_runs({20: 5.0}, {20: 9.0}))
    first = Path(runs["run_dir"].iloc[0])
    (first / "summary.json").write_text("[1, 2]")  # valid JSON, not an object
    (first / "metrics.csv").write_bytes(b"\xff\xfe\x00garbage")  # not text
    runs2, _ = collect(sweep)
    assert (
        len(runs2) == len(runs)
        and runs2.set_index("run_dir").loc[str(first), "error"] == "summary.json is unreadable"
    )


def test_runs_md_lists_every_ended_run_with_its_schedule_setting_device_and_errors(tmp_path):
    """runs.md: one row per completed or diverged run (not the failed, running or pending ones),
    plain nets first, each with its schedule, fast path, device, wall time, errors and the
    paper's."""
    sweep = make_mixed_sweep(tmp_path / SWEEP_NAME)
    cfg = sweep / DONE_RESNET / "config.yaml"
    cfg.write_text(cfg.read_text().replace("lr: 0.05", "lr: 0.1"))
    summary = sweep / DONE_RESNET / "summary.json"
    s = json.loads(summary.read_text())
    s.update(
        fast_path={"precision": "bf16", "compile": "default", "channels_last": True},
        device="cpu",
        device_name="x86_64",
        wall_time_s=1920.0,
    )
    summary.write_text(json.dumps(s))
    files = write_report(sweep, tmp_path / "rep")
    md = files["runs_md"].read_text()
    rows = md.splitlines()[2:]  # below the header and its rule
    assert [r.split(" | ")[0] for r in rows] == ["| plain-20", "| ResNet-20"]
    assert "| validation error (%) |" in md.splitlines()[0]
    resnet = rows[1]
    assert "| 40 (20, 30) |" in resnet and "| bf16, compile (default), channels_last |" in resnet
    assert "| CPU (x86_64) | 32 min | completed | 3.00 | 8.50 | 8.75 |" in resnet
    assert rows[0].endswith("| — |")  # the paper lists no plain nets in Table 6
    assert md in files["report"].read_text()  # report.md shows the same table
