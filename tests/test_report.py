"""The report: Table 6 against hand computations, the verdict, and the files resnet-report writes."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from resnet_repro.errors import ResnetReproError
from resnet_repro.report import table6, table6_markdown, verdict, write_report
from resnet_repro.results import collect

from .conftest import CI_LIMIT_S
from .test_results import (
    DONE_RESNET,
    SWEEP_NAME,
    make_mixed_sweep,
    metric_rows,
    run_name,
    write_manifest,
    write_run,
)


def fabricate(sweep: Path, runs: list[dict]) -> pd.DataFrame:
    """Write a sweep of the given runs (write_run keyword arguments) and collect its runs frame."""
    write_manifest(sweep, [{"depth": r["depth"], "residual": r["residual"], "seed": r["seed"],
                            "status": r.get("status", "completed")} for r in runs])
    for r in runs:
        write_run(sweep / run_name(r["depth"], r["residual"], r["seed"]), metrics=metric_rows(), **r)
    return collect(sweep).runs


def table_runs(reported_error: str = "validation") -> list[dict]:
    """ResNet-20 x3 seeds (+1 failed), plain-20 x1, plain-56 x2; test errors = val errors + 0.5."""
    spec = [  # depth, residual, seed, train, val, status
        (20, True, 0, 2.0, 8.0, "completed"),
        (20, True, 1, 3.0, 9.0, "completed"),
        (20, True, 2, 4.0, 10.0, "completed"),
        (20, True, 3, 0.5, 1.0, "failed"),       # would pull the mean down if counted
        (20, False, 0, 5.0, 11.0, "completed"),
        (56, False, 0, 7.0, 14.0, "completed"),
        (56, False, 1, 9.0, 16.0, "completed"),
    ]
    return [dict(depth=d, residual=r, seed=s, final_train_err=tr, final_val_err=va, status=st,
                 final_test_err=va + 0.5 if reported_error == "test" else None,
                 reported_error=reported_error, params=270_000 if r else 269_000,
                 error="RuntimeError: boom" if st == "failed" else None)
            for d, r, s, tr, va, st in spec]


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
    assert cells == ["ResNet-20", "0.27M", "3 (+1 unfinished)", "9.00 ± 1.00", "3.00 ± 1.00", "8.75"]
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
    write_manifest(sweep, [{"depth": r["depth"], "residual": r["residual"], "seed": r["seed"],
                            "status": r["status"]} for r in table_runs()]
                   + [{"depth": 56, "residual": True, "seed": 0, "status": "pending"}])
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
    write_manifest(sweep, [{"depth": r["depth"], "residual": r["residual"], "seed": r["seed"],
                            "status": r["status"]} for r in table_runs()]
                   + [{"depth": 56, "residual": True, "seed": 0, "status": "pending"}])
    md = table6_markdown(table6(collect(sweep).runs))
    (line,) = [ln for ln in md.splitlines() if ln.startswith("| ResNet-56 |")]
    assert [c.strip() for c in line.strip("|").split("|")][:2] == ["ResNet-56", "—"]
    assert "nan" not in md


def degradation_runs(plain_train: dict, resnet_val: dict) -> list[dict]:
    """Two seeds per net; the seeds' errors are the given value ± 1 (so the means are the values)."""
    out = []
    for residual, values in ((False, plain_train), (True, resnet_val)):
        for depth, v in values.items():
            for seed, delta in ((0, -1.0), (1, 1.0)):
                train, val = (v + delta, 20.0 + delta) if not residual else (3.0 + delta, v + delta)
                out.append(dict(depth=depth, residual=residual, seed=seed, final_train_err=train,
                                final_val_err=val, iterations_total=40))
    return out


def test_verdict_reproduced_quotes_the_numbers(tmp_path):
    runs = fabricate(tmp_path / SWEEP_NAME, degradation_runs({20: 5.0, 56: 9.0}, {20: 9.0, 56: 5.0}))
    text = verdict(runs)
    first = text.splitlines()[0]
    assert "the degradation problem is reproduced" in first
    assert "NOT" not in text
    assert "plain-56 9.00%" in text and "plain-20 5.00%" in text
    assert "ResNet-56 5.00%" in text and "ResNet-20 9.00%" in text
    assert "plain-56 9.00% training error > plain-20 5.00% (Δ +4.00 ± 1.41 s.e." in text
    assert "ResNet-56 5.00% validation error < ResNet-20 9.00% (Δ -4.00 ± 1.41 s.e." in text
    assert "Based on 8 finished runs (2 seed(s) per net), 40 iterations each" in text


def test_verdict_not_reproduced(tmp_path):
    runs = fabricate(tmp_path / SWEEP_NAME, degradation_runs({20: 9.0, 56: 5.0}, {20: 7.0, 56: 9.0}))
    text = verdict(runs)
    assert "the degradation problem is NOT reproduced" in text.splitlines()[0]
    assert "plain-56 5.00% training error <= plain-20 9.00%" in text
    assert "ResNet-56 9.00% validation error >= ResNet-20 7.00%" in text


@pytest.mark.parametrize(("plain_train", "resnet_val"), [
    ({20: 5.0, 56: 9.0}, {20: 5.0, 56: 9.0}),   # plain degrades, but ResNets do not improve
    ({20: 9.0, 56: 5.0}, {20: 9.0, 56: 7.0}),   # ResNets improve, but no degradation
])
def test_verdict_needs_both_halves(tmp_path, plain_train, resnet_val):
    text = verdict(fabricate(tmp_path / SWEEP_NAME, degradation_runs(plain_train, resnet_val)))
    assert "NOT reproduced" in text.splitlines()[0]


def test_verdict_within_the_noise_of_the_seeds_is_inconclusive(tmp_path):
    # ResNets: 7 ± 1.41 vs 9 ± 1.41 over two seeds each: Δ -2.00 is within 2 s.e. (2.83)
    text = verdict(fabricate(tmp_path / SWEEP_NAME, degradation_runs({20: 5.0, 56: 9.0}, {20: 9.0, 56: 7.0})))
    assert text.splitlines()[0].startswith("Verdict: the degradation problem is inconclusive")
    assert "within the noise of the seeds" in text


def test_verdict_with_one_seed_says_there_is_no_noise_estimate(tmp_path):
    runs = [r for r in degradation_runs({20: 5.0, 56: 9.0}, {20: 9.0, 56: 7.0}) if r["seed"] == 0]
    text = verdict(fabricate(tmp_path / SWEEP_NAME, runs))
    assert "the degradation problem is reproduced" in text.splitlines()[0]
    assert "s.e." not in text and "one seed per net, so there is no noise estimate" in text


def test_the_same_net_and_seed_twice_is_refused(tmp_path):
    runs = degradation_runs({20: 5.0, 56: 9.0}, {20: 9.0, 56: 5.0})
    fabricate(tmp_path / "a" / SWEEP_NAME, runs)
    fabricate(tmp_path / "b" / SWEEP_NAME, runs[:1])
    with pytest.raises(ResnetReproError, match="plain-20 seed 0 finished more than once"):
        write_report([tmp_path / "a", tmp_path / "b"], tmp_path / "rep")
    assert collect([tmp_path / "a", tmp_path / "b"]).runs["run"].is_unique  # labels keep the roots apart
    assert len(collect([tmp_path / "a", tmp_path / "a" / SWEEP_NAME]).runs) == len(runs)  # each run once


def test_verdict_with_one_depth_gives_no_verdict(tmp_path):
    runs = fabricate(tmp_path / SWEEP_NAME, degradation_runs({20: 5.0}, {20: 9.0}))
    text = verdict(runs)
    assert "reproduced" not in text
    assert "not assessed" in text


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
        "plain-20": 1, "plain-56": 0, "ResNet-20": 1, "ResNet-32": 0, "ResNet-56": 0}
    assert dict(zip(t["net"], t["unfinished"], strict=True)) == {
        "plain-20": 0, "plain-56": 2, "ResNet-20": 0, "ResNet-32": 1, "ResNet-56": 1}
    assert set(t["split"]) == {"val"}  # one completed run had no test split
    assert "not assessed" in files["verdict"].read_text()
    assert files["fig6_png"].is_file() and "fig7_png" not in files and "grad_norms_png" not in files
    assert "fig7.png" not in md


# --- the report folder of the real (shrunk) sweep --------------------------------------------------
REPORT_FILES = ("table6.md", "table6.csv", "runs.csv", "fig6.png", "fig6.pdf", "fig7.png", "fig7.pdf",
                "grad_norms.png", "grad_norms.pdf", "verdict.txt", "report.md")


def report_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "resnet_repro.report", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=CI_LIMIT_S)


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
    t = pd.read_csv(out / "table6.csv")
    assert t["net"].tolist() == ["plain-8", "plain-14", "ResNet-8", "ResNet-14"]
    assert (t["seeds"] == 2).all() and (t["unfinished"] == 0).all()
    assert len(pd.read_csv(out / "runs.csv")) == 8
    for name in ("fig6.pdf", "fig7.pdf", "grad_norms.pdf"):
        assert (out / name).read_bytes().startswith(b"%PDF"), name


@pytest.mark.parametrize(("name", "size"), [
    ("fig6.png", (1650, 630)),        # (11.0, 4.2) in at 150 dpi
    ("fig7.png", (1650, 1050)),       # (11.0, 7.0) in
    ("grad_norms.png", (1230, 600)),  # two panels (iterations 1 and 10): (3.6 * 2 + 1, 4.0) in
])
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


def test_report_cli_nonexistent_path_is_one_error_line(tmp_path):
    r = report_cli(str(tmp_path / "no-such-sweep"), cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("resnet-report: error: ")
    assert "no-such-sweep" in lines[0]
    assert "Traceback" not in r.stderr


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
    for role in ("table6_md", "table6_csv", "runs_csv", "fig6_png", "fig6_pdf", "fig7_png", "fig7_pdf",
                 "grad_norms_png", "grad_norms_pdf", "verdict", "manifest", "report"):
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
    shutil.copytree(tiny_sweep, sweep, ignore=shutil.ignore_patterns("checkpoint.pt", "*.log", ".hydra"))
    files = write_report(sweep)
    assert files["report"] == sweep / "report" / "report.md"
    before = (sweep / "report" / "table6.csv").read_text()
    runs = collect(sweep).runs
    assert len(runs) == 8 and (runs["status"] == "completed").all()
    assert runs["job"].notna().all()  # the moved sweep's manifest still matches its runs
    write_report(sweep)
    assert (sweep / "report" / "table6.csv").read_text() == before


def test_an_unwritable_report_folder_is_one_clear_error(tiny_sweep, tmp_path, capsys):
    from resnet_repro.report import main

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
    assert len(runs2) == len(runs) and runs2.set_index("run_dir").loc[str(first), "error"] == "summary.json is unreadable"
