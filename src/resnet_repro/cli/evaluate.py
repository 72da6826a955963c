"""``resnet-eval``: the error and loss of a saved checkpoint on a run's validation, test or training
split.

    resnet-eval runs/cifar10/resnet56-seed0 \
                 # the splits training evaluated (val, test)
    resnet-eval runs/cifar10/resnet56-seed0 --split test     # the 10k test batch
    resnet-eval runs/cifar10/resnet56-seed0 --split all --json
    resnet-eval runs/cifar10/resnet56-seed0 --checkpoint checkpoint.prev.pt
    resnet-eval /scratch/runs/resnet110-seed1 --data-root /data/cifar --device cuda

The run is rebuilt as training built it: its config (``config.yaml``, else the checkpoint's own
copy), the model from ``model``, the same split of the same data (``dataset``; ``--data-root``
replaces ``dataset.root`` when the run has moved), normalised by the training split's per-pixel
mean, and scored in eval mode by the training loop's own evaluation (``train.evaluate``) at
``trainer.eval_batch_size``. The checkpoint is read by the record's safe loader: only tensors, a
torn ``checkpoint.pt`` falls back to ``checkpoint.prev.pt`` (and says so).

Precision is fp32 by default (IEEE: no TF32 on CUDA, deterministic kernels), which reproduces what
a CPU run recorded exactly; ``--precision as-trained`` evaluates as the run's own eval steps did
(bf16 autocast and channels_last on CUDA by default), to reproduce a GPU run's recorded numbers.

Every refusal is one line, ``resnet-eval: error: ...``, with exit status 2, before any work where it
can be. ``--help`` and the checks on the run directory run before torch is imported.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import re
import sys
from pathlib import Path

from ..errors import CheckpointError, ConfigError, DataError, ResnetReproError, RunDirError
from ..record.files import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    PREVIOUS_CHECKPOINT_FILE,
    SUMMARY_FILE,
)

PROG = "resnet-eval"
SPLITS = ("val", "test", "train")  # the order they are printed in
SPLIT_CHOICES = (*SPLITS, "all")
PRECISIONS = ("fp32", "as-trained")
WEIGHTS_FILE = "weights.pt"  # analysis.weights.WEIGHTS_FILE: a published run's final weights
MANIFEST_FILE = "manifest.csv"  # a sweep's folder (sweep.py), told apart from a run's


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        _fail(f"{message}. See {PROG} --help.")


def _fail(message: str):
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(2)


def _device_name(text: str) -> str:
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(
            f"invalid device {text!r}: use auto, cpu, cuda, cuda:N or mps"
        )
    return text


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"invalid batch size {text!r}: a positive integer")
    return n


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Evaluate a run's saved checkpoint: error and loss per split, one line each.",
        epilog="examples:\n" + (__doc__ or "\n\n").split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", help="the run's directory (holds config.yaml and checkpoint.pt)")
    p.add_argument(
        "--split",
        choices=SPLIT_CHOICES,
        default=None,
        help="val, test, train (the training split, un-augmented, in eval mode) or all; "
        "default: the held-out splits the data has, as training evaluated them",
    )
    p.add_argument(
        "--checkpoint",
        metavar="PATH",
        default=None,
        help="a checkpoint file (as given, else inside run_dir); default: the run's last good "
        "one (checkpoint.pt, else checkpoint.prev.pt)",
    )
    p.add_argument(
        "--device",
        type=_device_name,
        default="auto",
        help="auto (CUDA when present), cpu, cuda, cuda:N or mps; default: auto",
    )
    p.add_argument(
        "--batch-size",
        type=_positive,
        default=None,
        metavar="N",
        help="evaluation batch size; default: the run's trainer.eval_batch_size",
    )
    p.add_argument(
        "--data-root",
        metavar="PATH",
        default=None,
        help="where the dataset is now (replaces the run's dataset.root)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="fp32 (default) or as-trained (the run's trainer.precision and channels_last)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    os.environ.setdefault(
        "CUBLAS_WORKSPACE_CONFIG", ":4096:8"
    )  # deterministic cuBLAS, before CUDA starts
    try:
        run_dir, checkpoint = locate(args.run_dir, args.checkpoint)
        result = evaluate_run(run_dir, checkpoint, args)
    except ResnetReproError as ex:
        _fail(str(ex))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted (Ctrl-C); nothing was written.", file=sys.stderr)
        sys.exit(130)
    for note in result["notes"]:
        print(f"{PROG}: note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for split, r in result["splits"].items():
        print(
            f"{split}: error {r['error']:.2f}%, loss {r['loss']:.4f} ({r['images']} images, "
            f"iteration {result['iteration']}, {result['checkpoint_name']}, {result['precision']} "
            f"on {result['device']})"
        )


# --- the run directory: checked before torch is imported ------------------------------------------
def locate(run_dir: str, checkpoint: str | None) -> tuple[Path, Path | None]:
    """The run directory and the checkpoint file asked for (None: the run's own), or a clear
    error."""
    d = Path(run_dir)
    if d.is_file() and checkpoint is None and d.suffix == ".pt":  # resnet-eval <run>/checkpoint.pt
        d, checkpoint = d.parent, str(d)
    if not d.exists():
        raise RunDirError(
            f"{d} does not exist. Give a run's directory, e.g. {PROG} runs/cifar10/resnet20-seed0."
        )
    if not d.is_dir():
        raise RunDirError(
            f"{d} is not a directory. Give a run's directory, e.g. {PROG} "
            f"runs/cifar10/resnet20-seed0."
        )
    record = [
        f
        for f in (
            CONFIG_FILE,
            CHECKPOINT_FILE,
            PREVIOUS_CHECKPOINT_FILE,
            SUMMARY_FILE,
            METRICS_FILE,
        )
        if os.path.lexists(d / f)
    ]
    if not record:
        below = sorted(
            str(p.parent) for p in [*d.glob(f"*/{CONFIG_FILE}"), *d.glob(f"*/*/{CONFIG_FILE}")]
        )
        example = below[0] if below else "runs/cifar10/resnet20-seed0"
        what = (
            "a sweep's folder, not a run's"
            if (d / MANIFEST_FILE).is_file()
            else "not a run directory"
        )
        raise RunDirError(
            f"{d} is {what}: it has no {CONFIG_FILE}, {CHECKPOINT_FILE} or {SUMMARY_FILE}. Give "
            f"the directory a run left{' below it' if below else ''}, e.g. {PROG} {example}."
        )
    if checkpoint is not None:
        p = Path(checkpoint)
        if not p.exists() and not p.is_absolute() and (d / p).exists():
            p = d / p
        if not p.exists():
            raise CheckpointError(
                f"--checkpoint {checkpoint}: no such file (nor in {d}). Give a checkpoint file, "
                f"or leave --checkpoint out to use the run's own."
            )
        if not p.is_file():
            raise CheckpointError(
                f"--checkpoint {checkpoint} is not a file. Give a checkpoint file, e.g. "
                f"--checkpoint {d / PREVIOUS_CHECKPOINT_FILE}."
            )
        return d, p
    if not any(os.path.lexists(d / f) for f in (CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE)):
        if (d / WEIGHTS_FILE).is_file():  # a published run: its final weights
            return d, d / WEIGHTS_FILE
        raise CheckpointError(
            f"{d} has no checkpoint to evaluate (no {CHECKPOINT_FILE} or "
            f"{PREVIOUS_CHECKPOINT_FILE}): a run writes its first at its first eval "
            f"(trainer.eval_every), and a deleted one cannot be evaluated. Wait for the run's "
            f"first eval, or give a checkpoint with --checkpoint PATH."
        )
    return d, None


# --- the run's config -----------------------------------------------------------------------------
@dataclasses.dataclass
class Setup:
    """What an evaluation is built from: the run's config groups, where they came from, the
    splits."""

    model: object
    dataset: object
    trainer: object
    optimizer: object
    seed: int
    source: str
    splits: list[str]


def _group(schema, values, group: str, source: str):
    """A config group as its schema's dataclass; keys the schema does not know are left out."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(values, dict):
        raise ConfigError(
            f"{source} has no {group} group: it is not a resnet_repro run's config. "
            f"Give the run's own directory."
        )
    known = {f.name for f in dataclasses.fields(schema)}
    try:
        node = OmegaConf.merge(
            OmegaConf.structured(schema), {k: v for k, v in values.items() if k in known}
        )
        return OmegaConf.to_object(node)
    except OmegaConfBaseException as ex:
        first = str(ex).strip().splitlines()[0]
        raise ConfigError(
            f"{source}: {group} cannot be read ({first}). Restore the run's config.yaml."
        ) from None


def setup(cfg: dict, source: str, args) -> Setup:
    """The run's config groups, the data root and splits checked against what is asked, before any
    work."""
    from ..config import OptimizerConfig, TrainerConfig
    from ..data.registry import DatasetConfig, check_dataset
    from ..models.registry import ModelConfig, check_model

    model = _group(ModelConfig, cfg.get("model"), "model", source)
    dataset = _group(DatasetConfig, cfg.get("dataset"), "dataset", source)
    trainer = _group(TrainerConfig, cfg.get("trainer") or {}, "trainer", source)
    optimizer = _group(OptimizerConfig, cfg.get("optimizer") or {}, "optimizer", source)
    try:
        check_model(model)
        check_dataset(dataset)
    except ConfigError as ex:
        raise ConfigError(f"{source}: {ex}") from None
    if args.data_root is not None:
        dataset.root = args.data_root
    dataset.download = False  # evaluation reads the data where it is, never fetches it
    check_data_root(dataset, args)
    have = available_splits(dataset)
    if args.split is None:
        wanted = [s for s in have if s != "train"]
    elif args.split == "all":
        wanted = have
    elif args.split in have:
        wanted = [args.split]
    else:
        raise ConfigError(
            f"--split {args.split}: {missing_split(dataset, args.split)}. This run has "
            f"{', '.join(have)}: use --split {' or --split '.join(have)} (or all)."
        )
    return Setup(model, dataset, trainer, optimizer, int(cfg.get("seed", 0)), source, wanted)


def _data_folder(name: str) -> str | None:
    """The folder under ``dataset.root`` that holds dataset ``name`` (None: synthetic, made from a
    seed)."""
    from ..data.registry import DATASETS

    return DATASETS[name].folder


def check_data_root(dataset, args) -> None:
    folder = _data_folder(dataset.name)
    if folder is None:
        return
    root = Path(dataset.root).expanduser()
    if (root / folder).is_dir():
        return
    given = (
        f"--data-root {args.data_root}"
        if args.data_root is not None
        else f"the run's dataset.root={dataset.root!r}"
    )
    where = (
        f"{root.absolute()} does not exist"
        if not root.exists()
        else f"{root.absolute()} has no {folder}/"
    )
    raise DataError(
        f"the run's data are not found: {where} ({given}). Point --data-root at the folder that "
        f"holds {folder}/: {PROG} {args.run_dir} --data-root /path/to/data."
    )


def available_splits(dataset) -> list[str]:
    """The splits the run has with the data at hand: val (paper protocol), test (when the data hold
    one), train."""
    from ..data import test_batch_available

    held_out = ["val"] if dataset.protocol == "paper" else []
    if test_batch_available(dataset):
        held_out.append("test")
    return [*held_out, "train"]


def missing_split(dataset, split: str) -> str:
    if split == "val":
        return (
            "the run trained on the whole training set (dataset.protocol=full), so it has no "
            "validation split"
        )
    folder = _data_folder(dataset.name)
    if folder is None:
        return "the run's synthetic data have no test split (dataset.num_test=0)"
    return f"{Path(dataset.root).absolute() / folder} has no test batch"


# --- the checkpoint -------------------------------------------------------------------------------
class _Captured(logging.Handler):
    """Holds the record's log messages while it loads, so they are told in this command's words."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@contextlib.contextmanager
def _quiet_log():
    log = logging.getLogger("resnet_repro")
    handler, propagate = _Captured(), log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield handler.records
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


def load_checkpoint(run_dir: Path, checkpoint: Path | None) -> tuple[dict, Path, list[str]]:
    """The checkpoint (through the record's safe loader), its path, and what happened on the way."""
    from ..analysis.weights import read_weights
    from ..record.checkpoint import Checkpoints

    ckpts = Checkpoints(run_dir)
    if checkpoint is not None:
        weights = read_weights(checkpoint)  # a published run's weights.pt (resnet-export --weights)
        return (weights if weights is not None else ckpts.read(checkpoint)), checkpoint, []
    with _quiet_log() as records:
        ckpt = ckpts.load(
            fix=f"Give another checkpoint with --checkpoint PATH (e.g. {ckpts.previous}); nothing "
            f"was changed."
        )
    if ckpt is None:  # gone between the check and the load
        raise CheckpointError(
            f"{run_dir} has no checkpoint to evaluate. Give one with --checkpoint PATH."
        )
    if ckpts.path.is_file():
        return ckpt, ckpts.path, []
    notes = [
        f"{r.args[0]} Evaluated {PREVIOUS_CHECKPOINT_FILE} (iteration {ckpt['iteration']}) instead"
        + (
            "; the bad file is kept as checkpoint.corrupt.pt."
            if (run_dir / "checkpoint.corrupt.pt").is_file()
            else "."
        )
        for r in records
        if r.levelno >= logging.WARNING and r.args
    ]
    return ckpt, ckpts.previous, notes


def read_config(run_dir: Path) -> tuple[dict | None, str, list[str]]:
    """config.yaml as a dict (None when missing or unreadable: the checkpoint's copy is used
    then)."""
    from ..record.run_record import RunRecord

    try:
        cfg = RunRecord(run_dir, create=False).saved_config()
    except RunDirError as ex:
        return None, "", [f"{ex} Using the checkpoint's own copy of the config."]
    return cfg, str(run_dir / CONFIG_FILE), []


# --- the evaluation -------------------------------------------------------------------------------
@contextlib.contextmanager
def _backends_kept():
    """Leave torch's process-wide flags as they were (FastPath.configure_backends sets them)."""
    import torch

    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
    )
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0])
        (
            torch.backends.cudnn.benchmark,
            torch.backends.cudnn.allow_tf32,
            torch.backends.cuda.matmul.allow_tf32,
        ) = saved[1:]


def pick(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            have = (
                "no CUDA device"
                if count == 0
                else f"{count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            )
            raise ConfigError(
                f"--device {name} but this machine has {have}. Use --device cpu or auto."
            )
    elif name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps but no MPS device is available. Use --device cpu or auto.")
    return torch.device(name)


def evaluate_run(run_dir: Path, checkpoint: Path | None, args) -> dict:
    """Evaluate the checkpoint on the splits asked for; the result as the JSON output holds it."""
    device = pick(args.device)
    cfg, source, notes = read_config(run_dir)
    plan = setup(cfg, source, args) if cfg is not None else None
    ckpt, ckpt_path, more = load_checkpoint(run_dir, checkpoint)
    notes += more
    if plan is None:
        if not isinstance(ckpt.get("config"), dict):
            raise CheckpointError(
                f"{ckpt_path} holds no config and {run_dir} has no readable {CONFIG_FILE}: "
                f"the model cannot be rebuilt. Restore the run's {CONFIG_FILE}."
            )
        plan = setup(ckpt["config"], f"{ckpt_path}'s config", args)
    with _backends_kept():
        results, fast = _evaluate(plan, ckpt, ckpt_path, device, args)
    precision = fast.precision + (" (as trained)" if args.precision == "as-trained" else "")
    return {
        "run_dir": str(run_dir),
        "checkpoint": str(ckpt_path),
        "checkpoint_name": ckpt_path.name,
        "iteration": ckpt["iteration"],
        "config": plan.source,
        "precision": precision,
        "channels_last": fast.channels_last,
        "device": str(device),
        "batch_size": args.batch_size or plan.trainer.eval_batch_size,
        "splits": results,
        "notes": notes,
    }


def _evaluate(plan: Setup, ckpt: dict, ckpt_path: Path, device, args) -> tuple[dict, object]:
    import torch

    from ..analysis.weights import build_net
    from ..data import load_splits
    from ..data.pipeline import DeviceData
    from ..training.step import FastPath
    from ..training.train import evaluate

    t = plan.trainer
    if args.precision == "fp32":  # IEEE fp32, deterministic kernels, the default layout
        t = dataclasses.replace(t, precision="fp32", channels_last=False, deterministic=True)
    fast = FastPath.resolve(dataclasses.replace(t, compile="off"), plan.optimizer, device)
    fast.configure_backends()
    try:
        with _quiet_log():  # the data's own notes (no test batch) are training's to give
            splits = load_splits(plan.dataset)
    except DataError as ex:
        raise DataError(
            f"{ex} (For {PROG}, --data-root PATH sets dataset.root; it never downloads.)"
        ) from None
    data = DeviceData(
        splits,
        device,
        batch_size=plan.trainer.batch_size,
        augment=False,
        seed=plan.seed,
        size=plan.dataset.image_size,
        probe_images=0,
    )
    model = build_net(
        plan.model, ckpt["model"], f"{ckpt_path} ({plan.source})", device, fast.memory_format
    )
    tensors = {**data.evals, "train": (data.batches.x, data.batches.y)}
    batch = args.batch_size or plan.trainer.eval_batch_size
    out = {}
    for split in (s for s in SPLITS if s in plan.splits):
        x, y = tensors[split]
        try:
            loss, err = evaluate(model, x, y, batch, data.mean, fast, data.size)
        except torch.cuda.OutOfMemoryError:
            raise ResnetReproError(
                f"{device} ran out of memory at batch size {batch}. Use a smaller "
                f"--batch-size (e.g. {max(1, batch // 4)})."
            ) from None
        out[split] = {"error": err, "loss": loss, "images": len(x)}
    return out, fast


if __name__ == "__main__":
    main()
