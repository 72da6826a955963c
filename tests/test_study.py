"""The study runner: the study as data, what counts as done, estimates, the budgeted runner (with
stand-in training processes, so that time is the only thing under test), packing and unpacking."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from resnet_repro import study as st
from resnet_repro.config import to_dict
from resnet_repro.errors import ResnetReproError
from resnet_repro.speed import Timings
from resnet_repro.study import runner as study_runner

from .helpers import CI_LIMIT_S, REPO

TINY = {"name": "tiny", "preset": "smoke", "seeds": [0, 1],
        "jobs": ["model.depth=8 model.residual=false", "model.depth=14 model.residual=false", "model.depth=8"]}


@pytest.fixture
def tiny(tmp_path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(TINY))
    return p


# --- the study as data ---------------------------------------------------------------------------
def test_the_degradation_study_runs_the_papers_core_comparison_first():
    s = st.load_study("degradation")
    jobs = st.resolve_jobs(s, ["dataset.root=../shared/data"])
    assert len(jobs) == 27 and [j.index for j in jobs] == list(range(27))
    assert [(j.net, j.seed) for j in jobs[:9]] == [
        ("plain-20", 0), ("plain-56", 0), ("ResNet-20", 0), ("ResNet-56", 0), ("plain-32", 0), ("plain-44", 0),
        ("ResNet-32", 0), ("ResNet-44", 0), ("ResNet-110", 0)]
    assert [j.seed for j in jobs] == [0] * 9 + [1] * 9 + [2] * 9
    assert jobs[0].name == "depth=20,residual=false,seed=0" and jobs[8].name == "depth=110,residual=true,seed=0"
    r110 = jobs[8].cfg
    assert r110.schedule.warmup and not jobs[3].cfg.schedule.warmup  # the preset's warm-up for 110 only
    assert jobs[0].cfg.schedule.iterations == 64000 and jobs[0].cfg.diagnostics.grad_norms == [1, 10, 100, 1000]
    assert jobs[0].cfg.experiment_name == "degradation" and jobs[0].cfg.dataset.root == "../shared/data"
    assert jobs[0].overrides == ["experiment=degradation", "trainer.precision=bf16", "model.depth=20",
                                 "model.residual=false", "seed=0", "dataset.root=../shared/data"]
    assert jobs[0].cfg.trainer.precision == "bf16"  # pinned: a record says what it ran at


def test_study_errors_are_one_line_before_any_work(tmp_path, tiny):
    with pytest.raises(ResnetReproError, match=r"No study 'nope' .* Studies: degradation"):
        st.load_study("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\npreset: smoke\n")
    with pytest.raises(ResnetReproError, match="lacks seeds, jobs"):
        st.load_study(str(bad))
    with pytest.raises(ResnetReproError) as ex:
        st.resolve_jobs(st.load_study(str(tiny)), ["model.depth=21"])
    assert "model.depth=21 is not a CIFAR ResNet depth" in str(ex.value)
    assert "(in study job: experiment=smoke model.depth=8 model.residual=false seed=0 model.depth=21; nothing was started)" in str(ex.value)


def test_a_job_is_done_where_a_record_of_its_recipe_completed(tmp_path, tiny):
    jobs = st.resolve_jobs(st.load_study(str(tiny)))
    out = tmp_path / "out"

    def record(root: Path, job: st.Job, status: str, **cfg_changes) -> Path:
        d = root / job.name
        d.mkdir(parents=True)
        cfg = to_dict(job.cfg)
        for k, v in cfg_changes.items():
            group, key = k.split(".")
            cfg[group][key] = v
        (d / "config.yaml").write_text(yaml.safe_dump(cfg))
        (d / "summary.json").write_text(json.dumps({"status": status, "iterations": 10, "wall_time_s": 60.0}))
        return d

    results = tmp_path / "results" / "2026-11-27-h100-20it"
    record(results, jobs[0], "completed", **{"dataset.root": "/tmp/data", "trainer.compile": "off"})  # runtime keys
    record(results, jobs[1], "completed", **{"schedule.iterations": 40})  # another recipe: not this job
    record(results, jobs[2], "diverged")  # a result too: not run again
    record(out, jobs[3], "interrupted")  # resumable, in the runner's own folder
    record(results, jobs[4], "failed")  # failed elsewhere: run again
    states = st.job_states(jobs, st.find_records([tmp_path / "results", out]), out)
    assert [s.status for s in states] == ["completed", "pending", "diverged", "pending", "pending", "pending"]
    assert states[0].record.run_dir == results / jobs[0].name
    assert states[3].done_iterations == 10 and states[4].done_iterations == 0
    table = st.progress_markdown(states)
    assert "| 1 | depth=8,residual=false,seed=0 | plain-8 | 0 | completed | 1.0 |" in table
    assert table.endswith("2 of 6 jobs done, 4 pending.\n")


# --- estimates and the plan ---------------------------------------------------------------------
def timings(s_per_iter: dict, setup_s: float = 0.0, sharing: dict | None = None, batch: int = 32) -> Timings:
    nets = {(v, d): {"s_per_iter": s, "setup_s": setup_s} for (v, d), s in s_per_iter.items()}
    return Timings(nets, {1: 1.0, **(sharing or {})}, batch)


def test_estimates_add_start_up_compilation_training_and_evals(tiny):
    jobs = st.resolve_jobs(st.load_study(str(tiny)))
    est = st.Estimator(timings({("plain", 8): 0.1, ("plain", 14): 0.2, ("residual", 8): 0.1}, setup_s=5.0,
                               sharing={2: 1.6}), start_s=10.0)
    j = jobs[1]  # plain-14: 20 iterations at batch 32, eval every 10 on 128 held-out images
    parts = est.seconds(j, j.iterations)
    assert parts["setup"] == 15.0 and parts["train"] == pytest.approx(20 * 0.2)
    assert parts["eval"] == pytest.approx(2 * (128 * 0.5 * 0.2 / 32 + 0.2))
    assert parts["total"] == pytest.approx(sum(v for k, v in parts.items() if k != "total"))
    assert est.seconds(j, j.iterations, sharing=2)["train"] == pytest.approx(20 * 0.2 * 2 / 1.6)
    rows = st.plan(st.job_states(jobs, []), est, parallel=1, budget_s=60.0)
    assert [r["fits"] for r in rows] == [True, True, True, False, False, False]  # 17.8 + 20.2 + 17.8, then > 60 s
    assert rows[1]["start_min"] == pytest.approx(rows[0]["end_min"])
    text = st.format_plan(rows, 60.0)
    assert "does not fit" in text and "start +0.0" in text


# --- the runner, with stand-in training processes ------------------------------------------------
FAKE = textwrap.dedent("""
    import json, signal, sys, time
    from pathlib import Path
    run, seconds, total, batch = Path(sys.argv[1].strip("'")), float(sys.argv[2]), int(sys.argv[3]), 32
    quiet = seconds < 0  # a run that logs nothing for that long (a long compilation, say)
    seconds = abs(seconds)
    stop = {}
    signal.signal(signal.SIGTERM, lambda *a: stop.setdefault("term", 1))
    def summary(status, it):
        (run / "summary.json").write_text(json.dumps({"status": status, "iterations": it, "device_name": "cpu"}))
    summary("running", 0)
    (run / "metrics.csv").write_text("iter,img_per_s\\n")
    for it in range(1, total + 1):
        if stop:
            summary("interrupted", it - 1)
            sys.exit(143)
        time.sleep(seconds / total)
        if not quiet:
            with open(run / "metrics.csv", "a") as f:
                f.write(f"{it},{batch * total / seconds}\\n")
    summary("completed", total)
    print("done")
""")


@pytest.fixture
def fake_training(monkeypatch):
    """Each job runs for ``actual[job name]`` seconds (default 0.5) in a process that behaves like a
    training run: metrics rows, a summary, SIGTERM -> interrupted; a negative time: the same, silent."""
    actual: dict[str, float] = {}

    def command(job, run_dir):
        return [sys.executable, "-c", FAKE, f"'{run_dir}'", str(actual.get(job.name, 0.5)), str(job.iterations)]

    monkeypatch.setattr(study_runner, "job_command", command)
    return actual


def _runner(tmp_path, tiny, net_est_s: dict, *, budget: float | None, parallel=1, sharing=None, **kw):
    """A runner over the tiny study whose jobs are estimated at ``net_est_s[(variant, depth)]``
    seconds each (default 0.5 s), evals left out of the estimates."""
    jobs = st.resolve_jobs(st.load_study(str(tiny)))
    net_s = {(j.variant, j.depth): net_est_s.get((j.variant, j.depth), 0.5) / j.iterations for j in jobs}
    est = st.Estimator(timings(net_s, sharing=sharing), start_s=0.0)
    est.eval_seconds = lambda *a: 0.0
    deadline = None if budget is None else time.monotonic() + budget
    messages = []
    r = st.Runner(st.job_states(jobs, []), est, tmp_path / "out", parallel=parallel, deadline=deadline,
                  reserve_s=0.0, poll_s=0.05, say=messages.append, **kw)
    return r, jobs, messages


def test_the_runner_starts_only_what_fits_in_priority_order(tmp_path, tiny, fake_training):
    r, jobs, messages = _runner(tmp_path, tiny, {("plain", 14): 60.0}, budget=8.0)
    r.run()
    ran = [a.job.name for a in r.ended]
    assert ran == [jobs[i].name for i in (0, 2, 3, 5)]  # plain-14 (60 s estimated) never starts
    assert all(a.status == "completed" for a in r.ended) and r.stop_reason is None
    assert [s.job.name for s in r.pending] == [jobs[1].name, jobs[4].name]
    assert any(m.startswith(f"study: start {jobs[0].name} (plain-8, seed 0; about 0.0 min") for m in messages)


def test_k_runs_share_the_device_when_sharing_measured_faster(tmp_path, tiny, fake_training):
    r, jobs, _ = _runner(tmp_path, tiny, {}, budget=None, parallel=2, sharing={2: 1.8})
    for j in jobs:
        fake_training[j.name] = 1.0
    r.run()
    starts = sorted(a.started for a in r.ended)
    assert len(r.ended) == 6 and starts[1] - starts[0] < 0.5  # two at once
    first = sorted(r.ended, key=lambda a: (a.started, a.sharing))[:2]  # started in one pass: the same clock
    assert [a.sharing for a in first] == [1, 2] and {a.job.index for a in first} == {0, 1}


def test_at_the_deadline_running_jobs_get_sigterm_and_are_recorded_interrupted(tmp_path, tiny, fake_training):
    r, jobs, messages = _runner(tmp_path, tiny, {}, budget=2.5, grace_s=20)
    fake_training[jobs[0].name] = -60.0  # estimated 0.5 s, really a minute, logging nothing (no speed to judge)
    t = time.monotonic()
    r.run()
    assert time.monotonic() - t < 15
    assert r.stop_reason == "the deadline" and [a.status for a in r.ended] == ["interrupted"]
    assert r.ended[0].returncode == 143
    assert json.loads((tmp_path / "out" / jobs[0].name / "summary.json").read_text())["status"] == "interrupted"
    assert any("deadline reached: stopping depth=8,residual=false,seed=0 (SIGTERM)" in m for m in messages)


def test_the_running_jobs_speed_refreshes_the_estimates(tmp_path, tiny, fake_training):
    r, jobs, _ = _runner(tmp_path, tiny, {}, budget=None)
    a_dir = tmp_path / "out" / jobs[0].name
    a_dir.mkdir(parents=True)
    (a_dir / "metrics.csv").write_text("iter,img_per_s\n5,100\n10,16\n")  # 2 s per iteration at batch 32
    predicted = r.est.step_seconds(jobs[0], 1)

    class Running:
        job, state = jobs[0], st.JobState(jobs[0], "pending")

    Running.count_from, Running.rows_before = 1, 0
    r.running = [Running()]
    r.observe()
    assert r.est.factor == pytest.approx(min(4.0, 2.0 / predicted))


def test_run_writes_the_study_log_and_packs_what_completed(tmp_path, tiny, fake_training, monkeypatch, capsys):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"batch": 32, "rows": [
        {"variant": v, "depth": d, "ours": {"img_per_s": 32 / 0.02, "warmup_s": 0.0}} for v in ("plain", "residual")
        for d in (8, 14)]}))
    monkeypatch.chdir(tmp_path)
    jobs = st.resolve_jobs(st.load_study(str(tiny)))
    fake_training[jobs[1].name] = -30.0  # overruns its estimate, logging nothing: stopped at the deadline
    with pytest.raises(SystemExit) as ex:
        st.main(["run", "--study", str(tiny), "--budget-min", "0.15", "--timings", str(bench), "--start-s", "0",
                 "--reserve-s", "0", "--grace-s", "10", "--archive", "packed.tar.xz"])
    assert ex.value.code == 0
    text = capsys.readouterr().out
    assert "Timings from " in text and "est min" in text and "study: packed" in text
    log = json.loads((tmp_path / "runs/study/tiny/study.json").read_text())
    by_job = {j["job"]: j for j in log["jobs"]}
    assert by_job[jobs[0].name]["status"] == "completed" and by_job[jobs[1].name]["status"] == "interrupted"
    assert "console_tail" in by_job[jobs[1].name] and log["stopped_by"] == "the deadline"
    with tarfile.open("packed.tar.xz") as tar:
        names = tar.getnames()
    assert "study.json" in names and f"runs/{jobs[0].name}/summary.json" in names
    assert not any(jobs[1].name in n for n in names)  # only completed records travel


def test_an_attempt_that_fails_at_start_is_failed_whatever_an_old_summary_says(tmp_path, tiny, monkeypatch):
    r, jobs, messages = _runner(tmp_path, tiny, {}, budget=None)
    old = tmp_path / "out" / jobs[0].name
    old.mkdir(parents=True)
    (old / "summary.json").write_text(json.dumps({"status": "completed"}))  # an earlier attempt's
    os.utime(old / "summary.json", (time.time() - 3600, time.time() - 3600))
    monkeypatch.setattr(study_runner, "job_command", lambda job, run_dir: [sys.executable, "-c", "import sys; print('boom'); sys.exit(2)"])
    r.pending = r.pending[:1]
    r.run()
    assert [a.status for a in r.ended] == ["failed"] and r.ended[0].returncode == 2
    assert any(m.endswith("exit 2: boom") for m in messages)


def test_a_job_folder_holding_another_recipe_is_refused_before_any_work(tmp_path, tiny, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    jobs = st.resolve_jobs(st.load_study(str(tiny)))
    d = tmp_path / "runs/study/tiny" / jobs[0].name
    d.mkdir(parents=True)
    cfg = to_dict(jobs[0].cfg)
    cfg["optimizer"]["lr"] = 0.05
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.setattr(study_runner, "job_command", lambda *a: pytest.fail("started a job"))
    with pytest.raises(SystemExit) as ex:
        st.main(["run", "--study", str(tiny), "--timings", str(tmp_path / "unused.json")])
    err = capsys.readouterr().err
    assert ex.value.code == 2 and f"{d.relative_to(tmp_path)} holds a run of another recipe (optimizer.lr: 0.05 there, 0.1 now)" in err
    with pytest.raises(SystemExit):
        st.main(["run", "--study", str(tiny), "--out", "it's", "--timings", "x.json"])
    assert "holds a quote, a backslash or '${'" in capsys.readouterr().err


def test_a_job_that_cannot_end_in_time_is_stopped_early_for_one_that_can(tmp_path, tiny, fake_training):
    r, jobs, messages = _runner(tmp_path, tiny, {}, budget=25.0, grace_s=20)
    fake_training[jobs[0].name] = 60.0  # estimated 0.5 s; its own speed soon says a minute
    r.run()
    status = {a.job.name: a.status for a in r.ended}
    assert status[jobs[0].name] == "interrupted" and status[jobs[1].name] == "completed"
    assert any("needs about" in m and "stopping it (SIGTERM; its checkpoint stays)" in m for m in messages)
    assert r.stop_reason is None  # stopped early, not at the deadline


def test_a_stopped_runner_stops_its_jobs_and_keeps_their_records(tmp_path, tiny):
    """SIGTERM to ``resnet-study run``: the running (real) training job checkpoints and records
    ``interrupted``, the study log says why, and the job resumes when the study runs again."""
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"batch": 32, "rows": [{"variant": "plain", "depth": 8,
                                                         "ours": {"img_per_s": 3200.0, "warmup_s": 0.0}}]}))
    out = tmp_path / "out"
    long = ["schedule.iterations=5000", "schedule.milestones=[4000,4500]"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-m", "resnet_repro.study", "run", "--study", str(tiny), "--out", str(out),
                          "--timings", str(bench), "--start-s", "0", *long], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    job = "depth=8,residual=false,seed=0"
    deadline = time.monotonic() + 120
    while not (out / job / "metrics.csv").is_file() and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    text = p.communicate(timeout=CI_LIMIT_S)[0]
    assert p.returncode == 143, text[-3000:]
    assert json.loads((out / job / "summary.json").read_text())["status"] == "interrupted"
    assert (out / job / "checkpoint.pt").is_file()
    log = json.loads((out / "study.json").read_text())
    assert log["stopped_by"] == "SIGTERM received" and log["jobs"][0]["status"] == "interrupted"
    states = st.job_states(st.resolve_jobs(st.load_study(str(tiny)), long), st.find_records([out]), out)
    assert states[0].status == "pending" and states[0].record.run_dir == out / job  # resumes there next time


def test_dry_run_prints_the_plan_and_starts_nothing(tmp_path, tiny, monkeypatch, capsys):
    monkeypatch.setattr(study_runner, "job_command", lambda *a: pytest.fail("started a job"))
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"batch": 32, "rows": [{"variant": "plain", "depth": 8,
                                                         "ours": {"img_per_s": 3200.0, "warmup_s": 1.0}}]}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        st.main(["run", "--study", str(tiny), "--dry-run", "--timings", str(bench)])
    out = capsys.readouterr().out
    assert "No budget: every job runs." in out and out.count("start +") == 6
    assert not (tmp_path / "runs").exists()  # nothing written, not even the study log


def test_bad_command_lines_are_one_line_errors(tmp_path, tiny, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argv, msg in ([["run", "--parallel", "0"], "--parallel 0 is not valid: auto, or a positive number of runs."],
                      [["status", "--study", "nope"], "No study 'nope'"],
                      [["run", "--study", str(tiny), "--timings", str(tmp_path / "missing.json")], "Cannot read timings"]):
        with pytest.raises(SystemExit) as ex:
            st.main(argv)
        err = capsys.readouterr().err
        assert ex.value.code == 2 and msg in err and err.count("\n") == 1, err


# --- packing and unpacking -----------------------------------------------------------------------
def _packed_run(out: Path, name: str, *, status="completed", device="NVIDIA H100 80GB HBM3", total=64000) -> Path:
    d = out / name
    (d / ".hydra").mkdir(parents=True)
    (d / "config.yaml").write_text("model: {depth: 20}\n")
    (d / "metrics.csv").write_text("iter,train_err\n100,50.0\n")
    (d / "summary.json").write_text(json.dumps({"status": status, "device": "cuda:0", "device_name": device,
                                                "iterations_total": total, "finished_at": "2026-11-27T12:00:00+00:00"}))
    (d / ".hydra" / "overrides.yaml").write_text("- seed=0\n")
    (d / "checkpoint.pt").write_bytes(b"weights" * 1000)
    (d / "run.lock").write_text("")
    return d


def test_pack_takes_completed_records_without_checkpoints_and_unpack_files_them(tmp_path):
    out = tmp_path / "runs/study/degradation"
    _packed_run(out, "depth=20,residual=false,seed=0")
    _packed_run(out, "depth=56,residual=false,seed=0", status="interrupted")
    (out / "study.json").write_text(json.dumps({"started_at": "2026-11-27T11:50:00+00:00",
                                                "finished_at": "2026-11-27T12:01:00+00:00",
                                                "device_name": "NVIDIA H100 80GB HBM3"}))
    archive = tmp_path / "study.tar.xz"
    assert st.pack(out, archive) == ["depth=20,residual=false,seed=0"]
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert names == {"study.json", *(f"runs/depth=20,residual=false,seed=0/{f}" for f in (
        "config.yaml", "metrics.csv", "summary.json", ".hydra/overrides.yaml"))}

    into = tmp_path / "analysis/results"
    folder = st.unpack(archive, into)
    assert folder == into / "2026-11-27-h100-64k"
    assert (folder / "depth=20,residual=false,seed=0/metrics.csv").read_text() == "iter,train_err\n100,50.0\n"
    assert (folder / "study-20261127T115000.json").is_file()
    assert st.unpack(archive, into) == folder  # the same records again: nothing changes
    one = tmp_path / "one.tar.xz"  # packing a single run folder keeps its name
    assert st.pack(out / "depth=20,residual=false,seed=0", one) == ["depth=20,residual=false,seed=0"]
    with tarfile.open(one) as tar:
        assert "runs/depth=20,residual=false,seed=0/summary.json" in tar.getnames()
    (folder / "depth=20,residual=false,seed=0/metrics.csv").write_text("iter,train_err\n")
    with pytest.raises(ResnetReproError, match="already holds a different record"):
        st.unpack(archive, into)


def test_pack_refuses_an_archive_over_the_limit_and_unpack_refuses_unsafe_paths(tmp_path):
    out = tmp_path / "out"
    _packed_run(out, "r1")
    with pytest.raises(ResnetReproError, match=r"more than 0 MiB"):
        st.pack(out, tmp_path / "a.tar.xz", limit=10)
    evil = tmp_path / "evil.tar.xz"
    with tarfile.open(evil, "w:xz") as tar:
        data = b"x"
        info = tarfile.TarInfo("runs/../../escape.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ResnetReproError, match="not a study log or a file of a run folder"):
        st.unpack(evil, tmp_path / "into")
    assert not (tmp_path / "escape.txt").exists()


@pytest.mark.parametrize("name, slug", [("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H200", "h200"),
                                        ("NVIDIA A100-SXM4-80GB", "a100"), ("x86_64", "cpu"), (None, "cpu"),
                                        ("NVIDIA GeForce RTX 4090", "nvidia-geforce-rtx-4090")])
def test_gpu_slugs(name, slug):
    assert st.gpu_slug(name) == slug


def test_schedule_tags():
    assert (st.schedule_tag(64000), st.schedule_tag(2000), st.schedule_tag(20)) == ("64k", "2k", "20it")


def test_the_report_lists_the_studys_done_and_pending_jobs(tiny_sweep, tmp_path):
    """A job is done where a run of its recipe completed: the degradation study's 64k-iteration jobs
    are all pending in a tiny sweep, and a study of the tiny sweep's recipe finds every run."""
    from resnet_repro.report import write_report

    files = write_report([tiny_sweep], tmp_path / "report", study="degradation")
    text = files["study"].read_text()
    assert "| 1 | depth=20,residual=false,seed=0 | plain-20 | 0 | pending |" in text
    assert text.endswith("0 of 27 jobs done, 27 pending.\n")
    assert "## The study: done and pending" in (tmp_path / "report" / "report.md").read_text()

    same = tmp_path / "tiny_sweep_study.yaml"  # the tiny sweep's recipe (tests/conftest.py) as a study
    same.write_text(yaml.safe_dump({
        "name": "tiny-sweep", "preset": "degradation", "seeds": [0, 1],
        "overrides": ["dataset=synthetic", "trainer.batch_size=32", "trainer.eval_batch_size=128",
                      "schedule.iterations=40", "schedule.milestones=[20,30]", "trainer.log_every=5",
                      "trainer.eval_every=20", "diagnostics.grad_norms=[1,10]"],
        "jobs": ["model.depth=8 model.residual=false", "model.depth=8", "model.depth=14 model.residual=false",
                 "model.depth=14"]}))
    files = write_report([tiny_sweep], tmp_path / "report2", study=str(same), study_overrides=["trainer.device=cpu"])
    text = files["study"].read_text()
    assert text.endswith("8 of 8 jobs done, 0 pending.\n") and "| 8 | depth=14,seed=1 | ResNet-14 | 1 | completed |" in text


def test_the_study_file_is_documented_in_the_readme():
    readme = (REPO / "README.md").read_text()
    assert "resnet-study run --budget-min" in readme and "conf/study/degradation.yaml" in readme
