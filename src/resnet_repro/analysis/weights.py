"""Trained weights: a run's net loaded back, ready to score images, and its weights saved on their
own.

    from resnet_repro import load_model
    net = load_model("runs/cifar10/resnet56-seed0")            # the run's last good checkpoint
    net = load_model("analysis/results/<folder>/<run>/weights.pt", device="cuda")
    logits = net(images)     # uint8 images (N, C, H, W), or floats in [0, 1];
                             # eval mode, no grad kept
    net.config               # the run's config (a dict); net.iteration, net.source
    net.net                  # the bare ResNet, which takes mean-subtracted images as in training

The net is rebuilt from the run's own config (``model``) and its weights, and subtracts its training
split's per-pixel mean (as training did) before the ResNet sees an image. ``weights.pt``, written by
``resnet-export --weights``, holds the model's weights (no optimizer state), that mean, the config
and the iteration; a run directory or a checkpoint holds no mean, so it is computed from the run's
data (``data_root=`` where they are now) when the net first needs it.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, DataError
from ..record.checkpoint import Checkpoints
from ..record.files import CHECKPOINT_FILE, CONFIG_FILE, PREVIOUS_CHECKPOINT_FILE, first_line

WEIGHTS_FILE = "weights.pt"
WEIGHTS_FORMAT = "resnet_repro.weights/1"


class Trained(nn.Module):
    """A trained net with what scoring an image needs: its training split's per-pixel mean and
    size."""

    def __init__(
        self,
        net: nn.Module,
        config: dict,
        iteration: int,
        source: str,
        pixel_mean: torch.Tensor | None,
    ):
        super().__init__()
        self.net, self.config, self.iteration, self.source = net, config, iteration, source
        self.register_buffer("pixel_mean", pixel_mean, persistent=False)

    @property
    def image_size(self) -> int | None:
        return (self.config.get("dataset") or {}).get("image_size")

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (or floats in [0, 1]) as the ResNet saw them in training."""
        from ..data.pipeline import normalize

        if self.pixel_mean is None:
            self.pixel_mean = _pixel_mean(self.config, None).to(images.device)
        x = images if images.dtype == torch.uint8 else images * 255  # floats in [0, 1]
        return normalize(x, self.pixel_mean.to(images.device), self.image_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(images))


def build_net(
    model_cfg, state: dict, source: str, device, memory_format=torch.contiguous_format
) -> nn.Module:
    """The net a run's ``model`` config describes, with ``state`` loaded; a mismatch is one line."""
    from ..models import build_model

    try:
        net = build_model(model_cfg).to(device, memory_format=memory_format)
    except (
        RuntimeError,
        MemoryError,
        OverflowError,
        ValueError,
    ) as ex:  # e.g. too many classes to allocate
        m = model_cfg
        raise ConfigError(
            f"{source} describes a model that cannot be built on {device} ({m.name}, depth "
            f"{m.depth}, {m.num_classes:,} classes): {first_line(ex)}. Load the weights of a run "
            f"of this harness."
        ) from None
    try:
        net.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as ex:
        raise CheckpointError(
            f"{source}'s weights do not fit the model its config describes ({model_cfg.name}, "
            f"depth {model_cfg.depth}): {first_line(ex)}. Give the weights of this run."
        ) from None
    return net.eval()


def model_config(config: dict, source: str):
    """The ``model`` group of a run's config as its schema's dataclass, checked."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from ..models.registry import ModelConfig, check_model

    values = config.get("model") if isinstance(config, dict) else None
    if not isinstance(values, dict):
        raise ConfigError(
            f"{source} has no model config: it is not a resnet_repro run's. Give a run's own files."
        )
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    try:
        m = OmegaConf.to_object(
            OmegaConf.merge(
                OmegaConf.structured(ModelConfig), {k: v for k, v in values.items() if k in known}
            )
        )
        check_model(m)
    except (OmegaConfBaseException, ConfigError) as ex:
        raise ConfigError(
            f"{source}: its model config cannot be read ({first_line(ex)})."
        ) from None
    return m


def _pixel_mean(config: dict, data_root: str | Path | None) -> torch.Tensor:
    """The per-pixel mean of the run's training split, from its data (as training computed it)."""
    from omegaconf import OmegaConf

    from ..data import load_splits
    from ..data.pipeline import pixel_mean
    from ..data.registry import DatasetConfig

    known = {f.name for f in dataclasses.fields(DatasetConfig)}
    ds = OmegaConf.to_object(
        OmegaConf.merge(
            OmegaConf.structured(DatasetConfig),
            {k: v for k, v in (config.get("dataset") or {}).items() if k in known},
        )
    )
    if data_root is not None:
        ds.root = str(data_root)
    ds.download = False
    try:
        splits_log = logging.getLogger("resnet_repro.data.splits")
        level, splits_log.level = (
            splits_log.level,
            logging.ERROR,
        )  # its note on the eval splits is training's
        try:
            return pixel_mean(load_splits(ds).train[0])
        finally:
            splits_log.setLevel(level)
    except DataError as ex:
        raise DataError(
            f"{ex} The net subtracts its training split's per-pixel mean, which a checkpoint does "
            f"not hold: give load_model(..., data_root=<the folder holding the data>), or load the "
            f"run's {WEIGHTS_FILE} (resnet-export --weights), which holds it."
        ) from None


def read_weights(path: Path) -> dict | None:
    """A ``weights.pt`` (through torch's safe loader), or None when ``path`` is not one."""
    if path.name != WEIGHTS_FILE:
        return None
    fix = "export it again (resnet-export --weights)"
    try:
        w = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as ex:
        raise CheckpointError(f"{path} cannot be read ({first_line(ex)}): {fix}.") from None
    keys = {"format", "model", "config", "iteration"}
    if not (isinstance(w, dict) and keys <= w.keys() and w["format"] == WEIGHTS_FORMAT):
        raise CheckpointError(f"{path} is not a resnet_repro weights file: {fix}.")
    return w


def _read(path: Path, checkpoint: str | Path | None) -> tuple[dict, dict, str]:
    """(state, config, source) from a run directory, a checkpoint file or a weights file."""
    if path.is_dir():
        ckpts = Checkpoints(path)
        if checkpoint is not None:
            p = Path(checkpoint) if Path(checkpoint).is_absolute() else path / checkpoint
            ckpt = ckpts.read(p)
        elif (path / WEIGHTS_FILE).is_file() and not ckpts.kept():
            return _read(path / WEIGHTS_FILE, None)
        else:
            ckpt = ckpts.load(
                fix=f"Give another checkpoint (checkpoint={PREVIOUS_CHECKPOINT_FILE})."
            )
            if ckpt is None:
                raise CheckpointError(
                    f"{path} has no {CHECKPOINT_FILE} or {WEIGHTS_FILE}: give a run directory that "
                    f"has one."
                )
        source = str(path)
    elif path.is_file():
        weights = read_weights(path)
        if weights is not None:
            return weights, weights["config"], str(path)
        ckpt, source = Checkpoints.read(path), str(path)
    else:
        raise CheckpointError(
            f"{path} does not exist. Give a run directory, a checkpoint or a {WEIGHTS_FILE}."
        )
    config = ckpt.get("config")
    saved = (path if path.is_dir() else path.parent) / CONFIG_FILE
    if saved.is_file():
        from ..record.run_record import RunRecord

        config = RunRecord(saved.parent, create=False).saved_config() or config
    if not isinstance(config, dict):
        raise CheckpointError(
            f"{source} holds no config and has no readable {CONFIG_FILE} beside it."
        )
    return ckpt, config, source


def load_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    checkpoint: str | Path | None = None,
    data_root: str | Path | None = None,
) -> Trained:
    """A run's trained net in eval mode on ``device``: from a run directory (its last good
    checkpoint, or ``checkpoint=``), a checkpoint file, or a ``weights.pt``."""
    state, config, source = _read(Path(path), checkpoint)
    net = build_net(model_config(config, source), state["model"], source, torch.device(device))
    mean = state.get("pixel_mean")
    if mean is None and data_root is not None:
        mean = _pixel_mean(config, data_root)
    return Trained(net, config, int(state["iteration"]), source, mean).to(device).eval()


def save_weights(run_dir: Path, into: Path, data_root: str | Path | None = None) -> Path:
    """``into/weights.pt``: the run's final weights (no optimizer state), its per-pixel mean, config
    and iteration; from the run's last good checkpoint."""
    trained = load_model(run_dir, data_root=data_root)
    mean = (
        trained.pixel_mean
        if trained.pixel_mean is not None
        else _pixel_mean(trained.config, data_root)
    )
    out = into / WEIGHTS_FILE
    torch.save(
        {
            "format": WEIGHTS_FORMAT,
            "model": trained.net.state_dict(),
            "pixel_mean": mean.cpu(),
            "config": trained.config,
            "iteration": trained.iteration,
        },
        out,
    )
    return out


def published(results: Path) -> dict[tuple, Path]:
    """The published CIFAR nets with weights under ``results`` (``<folder>/<run>/weights.pt``):
    {(depth, residual, schedule, seed): its weights.pt}, the latest folder's where several have
    one."""
    import yaml

    found = {}
    for w in sorted(Path(results).glob(f"*/*/{WEIGHTS_FILE}")):
        try:
            cfg = yaml.safe_load((w.parent / CONFIG_FILE).read_text())
            m, key = cfg["model"], None
            if (
                m["name"] == "resnet_cifar"
                and cfg["dataset"]["name"] == "cifar10"
                and m.get("shortcut", "A") == "A"
            ):
                key = (
                    int(m["depth"]),
                    bool(m["residual"]),
                    cfg["schedule"]["name"],
                    int(cfg["seed"]),
                )
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
            continue
        if key is not None:
            found[key] = w
    return found


def cifar_net(
    depth: int,
    residual: bool = True,
    *,
    pretrained: bool = False,
    schedule: str = "paper",
    seed: int = 0,
    device: str = "cpu",
    results: Path | None = None,
) -> nn.Module:
    """The paper's CIFAR-10 net (option A shortcuts): untrained, or with its published weights."""
    from ..models import build_model
    from ..models.registry import ModelConfig

    if not pretrained:
        return build_model(ModelConfig(depth=depth, n=(depth - 2) // 6, residual=residual)).to(
            device
        )
    have = published(results) if results is not None else {}
    name = f"{'ResNet' if residual else 'plain'}-{depth}"
    if (depth, residual, schedule, seed) not in have:
        listed = ", ".join(
            f"{'resnet' if r else 'plain'}{d} (schedule={s}, seed={sd})"
            for d, r, s, sd in sorted(have)
        )
        raise CheckpointError(
            f"no published weights for {name} at schedule={schedule}, seed={seed}. "
            + (
                f"Published: {listed}; use one of those, or pretrained=False."
                if listed
                else "No run has published weights yet: use pretrained=False."
            )
        )
    return load_model(have[(depth, residual, schedule, seed)], device)
