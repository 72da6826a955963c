"""resnet-eval: a saved checkpoint's numbers are those training recorded, and every refusal is one
line."""

import csv
import json
import re
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from resnet_repro.cli.evaluate import main
from resnet_repro.training.train import train

from .helpers import HANG_LIMIT_S, Evil, cfg_of, smoke_cfg, write_cifar_pickles

# checkpoints at iterations 5 (checkpoint.prev.pt) and 10 (checkpoint.pt), each with its eval row
SHORT = (
    "schedule.iterations=10",
    "schedule.milestones=[5,8]",
    "trainer.log_every=5",
    "trainer.eval_every=5",
    "diagnostics.layer_stats=off",
)
TINY = (
    "schedule.iterations=2",
    "schedule.milestones=[1,2]",
    "trainer.log_every=1",
    "trainer.eval_every=2",
    "diagnostics.layer_stats=off",
    "trainer.progress=false",
)
ERROR = re.compile(r"resnet-eval: error: \S.*\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished smoke run: ResNet-8 on synthetic data (512 training, 128 validation images), on
    the CPU."""
    d = tmp_path_factory.mktemp("eval") / "resnet8-seed0"
    train(smoke_cfg(*SHORT), d)
    return d


def copy(run, tmp_path, *, without=()):
    d = tmp_path / "run"
    shutil.copytree(run, d, ignore=shutil.ignore_patterns("run.lock", *without))
    return d


def cli(capsys, *argv) -> tuple[int, str, str]:
    """resnet-eval's exit status, stdout and stderr."""
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as ex:
        code = ex.code
    out, err = capsys.readouterr()
    return code, out, err


def as_json(capsys, *argv) -> dict:
    code, out, err = cli(capsys, *argv, "--json", "--device", "cpu")
    assert code == 0, err
    return json.loads(out)


def recorded(run_dir, it: int) -> dict:
    """metrics.csv's row at iteration ``it``, its numbers as floats."""
    with open(run_dir / "metrics.csv", newline="") as f:
        (row,) = [r for r in csv.DictReader(f) if int(r["iter"]) == it]
    return {k: float(v) for k, v in row.items() if v != ""}


def same(result: dict, row: dict, split: str = "val") -> None:
    """Equal to float32 precision (the record keeps each float's repr, so in practice bit for
    bit)."""
    assert result["splits"][split]["error"] == pytest.approx(
        row[f"{split}_err"], rel=1e-6, abs=1e-9
    )
    assert result["splits"][split]["loss"] == pytest.approx(row[f"{split}_loss"], rel=1e-6)


def refused(code: int, out: str, err: str) -> str:
    """A refusal: exit status 2, nothing on stdout, one line on stderr."""
    assert code == 2 and out == "", (code, out, err)
    assert ERROR.fullmatch(err), err
    return err


# --- the numbers ----------------------------------------------------------------------------------
def test_the_numbers_are_those_training_recorded(run, capsys):
    summary = json.loads((run / "summary.json").read_text())
    code, out, err = cli(capsys, run, "--device", "cpu")
    assert code == 0, err
    line = re.fullmatch(
        r"val: error (\d+\.\d\d)%, loss (\d+\.\d{4}) \(128 images, iteration 10, checkpoint\.pt, "
        r"fp32 on cpu\)\n",
        out,
    )
    assert line, out
    assert float(line[1]) == pytest.approx(summary["final_val_err"], abs=0.005)
    assert float(line[2]) == pytest.approx(summary["final_val_loss"], abs=0.00005)

    result = as_json(capsys, run)
    same(result, recorded(run, 10))
    assert result["splits"]["val"]["error"] == pytest.approx(summary["final_val_err"], rel=1e-6)
    assert result["splits"]["val"]["loss"] == pytest.approx(summary["final_val_loss"], rel=1e-6)


def test_json_holds_every_split_asked_for(run, capsys):
    result = as_json(capsys, run, "--split", "all", "--batch-size", "50")
    assert list(result["splits"]) == ["val", "train"]  # synthetic smoke data: no test split
    assert {s: r["images"] for s, r in result["splits"].items()} == {"val": 128, "train": 512}
    assert result["iteration"] == 10 and result["checkpoint"] == str(run / "checkpoint.pt")
    assert (
        result["precision"] == "fp32" and result["device"] == "cpu" and result["batch_size"] == 50
    )
    assert result["config"] == str(run / "config.yaml") and result["notes"] == []
    same(
        result, recorded(run, 10)
    )  # another batch size sums in another order: still equal to float precision
    assert 0 <= result["splits"]["train"]["error"] <= 100 and result["splits"]["train"]["loss"] > 0


def test_an_earlier_checkpoint_gives_that_iterations_numbers(run, capsys):
    result = as_json(
        capsys, run, "--checkpoint", "checkpoint.prev.pt"
    )  # found inside the run directory
    assert result["iteration"] == 5 and result["checkpoint"] == str(run / "checkpoint.prev.pt")
    same(result, recorded(run, 5))
    result = as_json(capsys, run / "checkpoint.pt")  # a checkpoint file stands for its run
    assert result["iteration"] == 10 and result["run_dir"] == str(run)


def test_a_torn_checkpoint_falls_back_to_the_previous_one_and_says_so(run, tmp_path, capsys):
    d = copy(run, tmp_path)
    (d / "checkpoint.pt").write_bytes(b"")
    code, out, err = cli(capsys, d, "--device", "cpu")
    assert code == 0, err
    assert out.startswith("val: error ") and "iteration 5, checkpoint.prev.pt, fp32 on cpu" in out
    assert (
        err.count("\n") == 1 and err.startswith("resnet-eval: note: ") and "empty (0 bytes)" in err
    )
    assert "checkpoint.corrupt.pt" in err and (d / "checkpoint.corrupt.pt").is_file()
    same(as_json(capsys, d), recorded(run, 5))


def test_without_config_yaml_the_checkpoints_copy_rebuilds_the_run(run, tmp_path, capsys):
    d = copy(run, tmp_path, without=("config.yaml",))
    result = as_json(capsys, d)
    assert result["config"] == f"{d / 'checkpoint.pt'}'s config"
    same(result, recorded(run, 10))


def test_precision_as_trained_reproduces_a_bf16_runs_numbers(tmp_path, capsys):
    d = tmp_path / "bf16"
    train(smoke_cfg(*TINY, "trainer.precision=bf16"), d)  # bf16 autocast, as trainer=fast trains
    result = as_json(capsys, d, "--precision", "as-trained")
    assert result["precision"] == "bf16 (as trained)"
    same(result, recorded(d, 2))
    fp32 = as_json(capsys, d)
    assert fp32["precision"] == "fp32"
    assert fp32["splits"]["val"]["loss"] == pytest.approx(result["splits"]["val"]["loss"], rel=0.05)


def test_a_moved_cifar_run_finds_its_data_with_data_root(tmp_path, capsys):
    """CIFAR-layout files (with a test batch) read by the real reader; the run and its data both
    move."""
    data = tmp_path / "data"
    write_cifar_pickles(data, per_file=20, test=True)
    cfg = cfg_of(
        "model.n=1",
        "trainer.device=cpu",
        "trainer.batch_size=16",
        "trainer.eval_batch_size=64",
        f"dataset.root={data}",
        "dataset.download=false",
        "dataset.verify=false",
        "dataset.val_size=20",
        *TINY,
    )
    train(cfg, tmp_path / "run")
    run, moved = tmp_path / "elsewhere" / "run", tmp_path / "elsewhere" / "data"
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "run").rename(run)
    data.rename(moved)

    err = refused(*cli(capsys, run, "--device", "cpu"))
    assert f"{data} does not exist" in err and f"dataset.root='{data}'" in err
    assert "cifar-10-batches-py/" in err and "--data-root /path/to/data" in err
    err = refused(*cli(capsys, run, "--data-root", tmp_path))
    assert f"--data-root {tmp_path}" in err and "has no cifar-10-batches-py/" in err

    result = as_json(capsys, run, "--data-root", moved)
    assert {s: r["images"] for s, r in result["splits"].items()} == {"val": 20, "test": 20}
    row = recorded(run, 2)
    same(result, row, "val")
    same(result, row, "test")
    assert list(as_json(capsys, run, "--data-root", moved, "--split", "test")["splits"]) == ["test"]


# --- refusals: one line, exit status 2 ------------------------------------------------------------
def test_not_a_run_directory(run, tmp_path, capsys):
    assert "does not exist" in refused(*cli(capsys, tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    err = refused(*cli(capsys, tmp_path / "empty"))
    assert "is not a run directory" in err and "config.yaml" in err
    err = refused(*cli(capsys, run.parent))  # the folder above a run: the run is named
    assert f"e.g. resnet-eval {run}" in err
    (tmp_path / "file.txt").write_text("x")
    assert "is not a directory" in refused(*cli(capsys, tmp_path / "file.txt"))


def test_no_checkpoint(run, tmp_path, capsys):
    d = copy(run, tmp_path, without=("checkpoint*.pt",))
    err = refused(*cli(capsys, d))
    assert "has no checkpoint to evaluate" in err and "--checkpoint PATH" in err
    err = refused(*cli(capsys, run, "--checkpoint", tmp_path / "missing.pt"))
    assert "no such file" in err


def test_a_split_the_run_does_not_have(run, tmp_path, capsys):
    err = refused(*cli(capsys, run, "--split", "test"))
    assert "no test split" in err and "This run has val, train" in err and "--split val" in err
    d = copy(run, tmp_path)
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    cfg["dataset"].update(protocol="full", num_test=64)
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    err = refused(*cli(capsys, d, "--split", "val"))
    assert "no validation split" in err and "This run has test, train" in err


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "is empty (0 bytes)"),
        (b"PK\x03\x04 not a zip", "truncated or corrupt"),
        (None, "refused: it holds objects that are not tensors"),
    ],
)
def test_a_checkpoint_the_safe_loader_refuses(run, tmp_path, capsys, content, expected):
    d = copy(run, tmp_path, without=("checkpoint.prev.pt",))
    target = tmp_path / "pwned"
    if content is None:
        torch.save({"iteration": 10, "model": Evil(str(target))}, d / "checkpoint.pt")
    else:
        (d / "checkpoint.pt").write_bytes(content)
    err = refused(*cli(capsys, d))
    assert (
        expected in err and "start this run again" not in err
    )  # evaluation's advice, not training's
    assert not target.exists()  # nothing in it was run


def test_a_config_asking_for_more_than_can_be_allocated_is_one_line(run, tmp_path, capsys):
    d = copy(run, tmp_path)
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    cfg["model"]["num_classes"] = 10**12
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    err = refused(*cli(capsys, d, "--device", "cpu"))
    assert (
        "describes a model that cannot be built on cpu" in err
        and "1,000,000,000,000 classes" in err
    )


@pytest.mark.parametrize("iteration", ["lots", -3, 2.5, None])
def test_a_checkpoint_whose_iteration_is_not_a_count_is_refused(run, tmp_path, capsys, iteration):
    d = copy(run, tmp_path, without=("checkpoint.prev.pt",))
    ckpt = torch.load(d / "checkpoint.pt", weights_only=True)
    ckpt["iteration"] = iteration
    torch.save(ckpt, d / "checkpoint.pt")
    err = refused(*cli(capsys, d, "--device", "cpu"))
    assert "is not a resnet_repro checkpoint" in err and "lots" not in err


def test_a_long_reason_is_cut_between_words():
    from resnet_repro.record.files import clip

    text = "word " * 100
    assert clip(text, 23) == "word word word word ..." and clip("short") == "short"
    assert clip("x" * 300).endswith("...") and len(clip("x" * 300)) <= 204


def test_weights_that_do_not_fit_the_config(run, tmp_path, capsys):
    d = copy(run, tmp_path)
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    cfg["model"].update(n=2, depth=14)
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    err = refused(*cli(capsys, d, "--device", "cpu"))
    assert "weights do not fit the model its config describes" in err and "depth 14" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_device_this_machine_does_not_have(run, capsys):
    assert "--device cuda but this machine has no CUDA device" in refused(
        *cli(capsys, run, "--device", "cuda")
    )


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--split", "bogus"], "invalid choice: 'bogus'"),
        (["--batch-size", "0"], "invalid batch size '0'"),
        (["--device", "gpu"], "invalid device 'gpu'"),
        ([], "required: run_dir"),
    ],
)
def test_a_bad_argument(run, capsys, argv, expected):
    err = refused(*cli(capsys, *([run] if argv else []), *argv))
    assert expected in err and "See resnet-eval --help." in err


# --- the command itself ---------------------------------------------------------------------------
@pytest.mark.slow
def test_the_command_answers_help_and_bad_run_directories_before_torch(tmp_path):
    child = (
        "import sys\nfrom resnet_repro.cli.evaluate import main\n"
        "for argv in (['--help'], [sys.argv[1]]):\n"
        "    try:\n        main(argv)\n"
        "    except SystemExit as ex:\n        print('exit', ex.code)\n"
        "print('torch imported' if 'torch' in sys.modules else 'no torch')\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", child, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=HANG_LIMIT_S,
    )
    assert "usage: resnet-eval" in r.stdout and "examples:" in r.stdout
    assert r.stdout.splitlines()[-3:] == ["exit 0", "exit 2", "no torch"], r.stdout + r.stderr
    assert ERROR.fullmatch(r.stderr) and "is not a run directory" in r.stderr


@pytest.mark.slow
def test_the_command_line_end_to_end(run):
    r = subprocess.run(
        [sys.executable, "-m", "resnet_repro.cli.evaluate", str(run), "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=HANG_LIMIT_S,
    )
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(
        r"val: error \d+\.\d\d%, loss \d+\.\d{4} \(128 images, iteration 10, checkpoint\.pt, "
        r"fp32 on cpu\)\n",
        r.stdout,
    ), r.stdout
    assert r.stderr == ""
