"""Typed (structured) configs for every Hydra group, and the checks that run before any work.

Each group in ``conf/`` is merged onto one of these dataclasses, so a misspelt key or a value of
the wrong type is refused by OmegaConf. Value-level rules (depth 6n+2, positive lr, ...) are
checked by :func:`validate`, which raises :class:`ConfigError` with one message naming the key, the
bad value and the valid choices.

The model and dataset groups' schemas and rules live next to their code, in
``models/registry.py`` and ``data/registry.py`` (both without torch); this module composes them,
holds the other groups' and the checks across groups (the model against the dataset, the batch
against the training split, the warm-up by depth), and registers the schemas with Hydra on import.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from .checks import choice, positive
from .data.registry import (
    DatasetConfig,
    check_dataset,
    check_val_size,
    shape,
    train_split_size,
)
from .errors import ConfigError
from .models.registry import (
    CIFAR_MODELS,
    REGISTRY,
    ModelConfig,
    check_model,
    depth_or_default,
)

SCHEDULE_UNITS = ("iterations", "epochs")
LAYER_STATS = ("off", "end", "eval")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILE_MODES = ("auto", "off", "default", "max-autotune")
OPTIMIZER_IMPLS = ("auto", "fused", "foreach", "loop")
DEVICES = "auto, cpu, cuda, cuda:N, mps. N is a GPU's number: 0, 1, ..."


@dataclass
class OptimizerConfig:
    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    impl: str = "auto"  # auto (fused on CUDA, else foreach) | fused | foreach | loop


@dataclass
class ScheduleConfig:
    name: str = "paper"
    unit: str = "iterations"  # iterations | epochs: the unit of iterations and milestones
    iterations: int = 64000
    milestones: list[int] = field(default_factory=lambda: [32000, 48000])
    gamma: float = 0.1
    # ResNet-110 warm-up: lr warmup_lr until the training error is below warmup_until_error.
    # auto: on for the CIFAR nets of depth >= 110, as the paper did; true | false.
    # Resolved to a bool.
    warmup: Any = "auto"
    warmup_lr: float = 0.01
    warmup_until_error: float = 0.8


@dataclass
class StackMember:
    """A run a stacked job trains (set by the sweeper, ``trainer.stack``): its residual flag, seed
    and run directory (its job name in the sweep folder)."""

    residual: bool = True
    seed: int = 0
    name: str = ""


@dataclass
class TrainerConfig:
    device: str = "auto"
    batch_size: int = 128
    eval_batch_size: int = 1000
    log_every: int = 100
    eval_every: int = 1000
    progress: bool = True
    deterministic: bool = False
    num_threads: int | None = None  # torch's CPU threads; null: torch's count (every core)
    # The fast path (auto: what is fast and correct on the device the run lands on)
    precision: str = (
        "auto"  # auto (fp32: see step.FAST_BY_DEFAULT) | fp32 | bf16 | fp16 (with a grad scaler)
    )
    channels_last: bool | None = None  # null: where the fast path is the default (nowhere yet)
    compile: str = "auto"  # auto (off: see step.FAST_BY_DEFAULT) | off | default | max-autotune
    cuda_graphs: bool = True  # with compile on CUDA: replay the compiled step as CUDA graphs
    # Stacked runs (stacking.py): a multirun's jobs that differ only in model.residual and seed
    # train as one grouped net of up to k members.
    # auto: where benchmarks measured it faster | off | k
    stack: str = "auto"
    stack_members: list[StackMember] = field(default_factory=list)  # set by the sweeper, per job


@dataclass
class LoggerConfig:
    name: str = "local"
    # logger=wandb: mirror the run into Weights & Biases (the local record is always written)
    mode: str = "online"
    project: str = "resnet_repro"
    entity: str | None = None
    tags: list[str] = field(default_factory=list)
    group: str | None = None  # default: the sweep id
    job_type: str | None = None  # default: the experiment name
    init_timeout: float = 30.0  # seconds W&B may take to start a run before the job goes on
    log_checkpoints: bool = False  # the checkpoint as a W&B model Artifact at the run's end


@dataclass
class DiagnosticsConfig:
    # Paper Fig. 7: std of every 3x3 layer's response (after BN, before the addition and ReLU) on a
    # fixed batch of held-out images. "end": once, with the final weights; "eval": at every eval.
    layer_stats: str = "end"
    layer_stats_images: int = 1000
    # Per-layer gradient norms of the 3x3 convs at these iterations (e.g. [1,10,100,1000]);
    # [] = off.
    grad_norms: list[int] = field(default_factory=list)


@dataclass
class Config:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    schedule: ScheduleConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = MISSING
    diagnostics: DiagnosticsConfig = MISSING
    seed: int = 0
    experiment_name: str = "${dataset.name}"
    name: str = (
        "${run_name:${model.residual},${model.n},${model.depth},${model.shortcut},${seed},"
        "${model.name}}"
    )


GROUP_SCHEMAS = {
    "model": ModelConfig,
    "dataset": DatasetConfig,
    "optimizer": OptimizerConfig,
    "schedule": ScheduleConfig,
    "trainer": TrainerConfig,
    "logger": LoggerConfig,
    "diagnostics": DiagnosticsConfig,
}


def config_dir() -> Path:
    """``conf/`` shipped inside the package (wheel installs) or at the repository top
    (checkouts)."""
    packaged = Path(__file__).parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "conf"


def register_configs() -> None:
    """Put the schemas into Hydra's ConfigStore (``conf/config.yaml`` extends ``base_config``)."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)


# Keys that may differ when a run is resumed: where and how it runs, not what it computes.
RUNTIME_KEYS = {
    "dataset.root",
    "dataset.download",
    "trainer.device",
    "trainer.progress",
    "trainer.num_threads",
    "trainer.channels_last",
    "trainer.compile",
    "trainer.cuda_graphs",
    "trainer.stack",
    "trainer.stack_members",
    "optimizer.impl",
    "logger.name",
    "logger.mode",
    "logger.project",
    "logger.entity",
    "logger.tags",
    "logger.group",
    "logger.job_type",
    "logger.init_timeout",
    "diagnostics.layer_stats",
    "diagnostics.layer_stats_images",
    "diagnostics.grad_norms",
}
EXTENDABLE_KEY = "schedule.iterations"  # the one key a run may change to continue (check_same_run)
# A single run's directory is runs/<experiment>/<name>, followed by the overrides that make it
# another recipe (Hydra's hydra.job.override_dirname without these keys), e.g.
# resnet20-seed0,optimizer.lr=0.05: the keys a resume accepts changed, and those the name already
# shows, are left out.
NOT_IN_RUN_DIR = RUNTIME_KEYS | {
    EXTENDABLE_KEY,
    "seed",
    "name",
    "experiment",
    "experiment_name",
    "model",
    "model.n",
    "model.depth",
    "model.residual",
    "model.shortcut",
    "logger",
}
RUN_DIR_MAX = 200  # a folder name's length at most (file systems allow 255 bytes)


def run_dir_name(name: str, overrides: str = "", given: Iterable[str] = ()) -> str:
    """A single run's folder: its name and the overrides that make it another recipe (Hydra's
    ``override_dirname``); a very long list is cut and ends in a hash of the whole. A name given on
    the command line (``name=look`` among ``given``, the task's overrides) is the folder as it
    is."""
    if not overrides or any(o.split("=", 1)[0].lstrip("+") == "name" for o in given):
        return name
    text = f"{name},{overrides}".replace("/", "_")
    if len(text) <= RUN_DIR_MAX:
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    return f"{text[: RUN_DIR_MAX - 16]},hash={digest}"


def run_name(
    residual: bool,
    n: int | None,
    depth: int | None,
    shortcut: str,
    seed: int,
    model: str = "resnet_cifar",
) -> str:
    """Readable run name that always shows the depth, e.g. ``resnet56-seed0``, ``plain20-seed1``,
    ``preact-resnet110-seed0``, ``resnet50-seed0`` (the ImageNet net)."""
    row = REGISTRY.get(model)
    kind = (row.prefix if row else "") + ("resnet" if residual else "plain")
    try:
        d = depth_or_default(n, depth)
    except TypeError:  # bad types are reported by validate(); the name only has to exist
        d = depth if depth is not None else f"n{n}"
    tag = f"-{shortcut}" if residual and shortcut != "A" and row and row.shortcut is None else ""
    return f"{kind}{d}{tag}-seed{seed}"


WARMUP_FROM_DEPTH = (
    110  # the paper warms up its 110-layer net (and the 1202-layer one) with lr 0.01
)
WARMUPS = ("auto", "true", "false")


def resolve_warmup(cfg: Config) -> None:
    """``schedule.warmup``: auto -> on for CIFAR nets of depth >= 110 (the paper's rule); a bool
    stays."""
    w = cfg.schedule.warmup
    word = str(w).lower()
    if word not in WARMUPS:
        raise ConfigError(
            f"schedule.warmup={w!r} is not valid. Valid choices: {', '.join(WARMUPS)} (auto: on "
            f"for depth >= {WARMUP_FROM_DEPTH}, as the paper did for ResNet-110)."
        )
    if word == "auto":
        cfg.schedule.warmup = (
            cfg.model.name in CIFAR_MODELS and cfg.model.depth >= WARMUP_FROM_DEPTH
        )
    else:
        cfg.schedule.warmup = word == "true"


# on import: every entry point (the CLI, the study, tests) composes with the schemas
register_configs()


if not OmegaConf.has_resolver("run_name"):
    OmegaConf.register_new_resolver("run_name", run_name)
    OmegaConf.register_new_resolver("run_dir_name", run_dir_name)
    OmegaConf.register_new_resolver("not_in_run_dir", lambda: sorted(NOT_IN_RUN_DIR))


def validate(cfg: Config) -> Config:
    """Check value-level rules and fill derived fields (model.n, model.depth, model.in_channels and
    schedule.warmup) in place. Groups are checked in order, so the first error met is reported."""
    check_model(cfg.model)
    check_dataset(cfg.dataset)
    _check_model_fits_dataset(cfg.model, cfg.dataset)
    check_val_size(cfg.dataset)
    _check_optimizer(cfg.optimizer)
    resolve_warmup(cfg)
    _check_schedule(cfg.schedule)
    _check_trainer(cfg.trainer, train_split_size(cfg.dataset))
    _check_logger(cfg.logger)
    _check_diagnostics(cfg.diagnostics)
    return cfg


def _check_model_fits_dataset(m: ModelConfig, d: DatasetConfig) -> None:
    """The net's classes and input channels are the dataset's (``in_channels=null``: taken from
    it)."""
    classes, _, channels = shape(d)
    if m.in_channels is None:
        m.in_channels = channels
    if m.num_classes != classes:
        raise ConfigError(
            f"model.num_classes={m.num_classes} does not fit dataset.name={d.name}, which has "
            f"{classes} classes. Use model.num_classes={classes}."
        )
    if m.in_channels != channels:
        raise ConfigError(
            f"model.in_channels={m.in_channels} does not fit dataset.name={d.name}, whose images "
            f"have {channels} channel(s). Leave model.in_channels=null to take the dataset's."
        )


def _check_optimizer(o: OptimizerConfig) -> None:
    choice("optimizer.name", o.name, ("sgd",))
    choice("optimizer.impl", o.impl, OPTIMIZER_IMPLS)
    positive("optimizer.lr", o.lr)
    positive("optimizer.weight_decay", o.weight_decay, allow_zero=True)
    if not 0 <= o.momentum < 1:
        raise ConfigError(f"optimizer.momentum={o.momentum} is not valid: it must be in [0, 1).")


def _check_schedule(s: ScheduleConfig) -> None:
    choice("schedule.unit", s.unit, SCHEDULE_UNITS)
    positive("schedule.iterations", s.iterations)
    if list(s.milestones) != sorted(s.milestones) or any(x <= 0 for x in s.milestones):
        raise ConfigError(
            f"schedule.milestones={list(s.milestones)} is not valid: they must be positive "
            f"iteration counts in increasing order, e.g. [32000,48000]."
        )
    if not 0 < s.gamma <= 1:
        raise ConfigError(f"schedule.gamma={s.gamma} is not valid: it must be in (0, 1].")
    positive("schedule.warmup_lr", s.warmup_lr)
    if not 0 < s.warmup_until_error <= 1:
        raise ConfigError(
            f"schedule.warmup_until_error={s.warmup_until_error} is not valid: it is a "
            f"training error in (0, 1], e.g. 0.8."
        )


def _check_trainer(t: TrainerConfig, n_train: int) -> None:
    """The trainer group's rules, and its batch against the ``n_train`` images of the training
    split."""
    for key in ("batch_size", "eval_batch_size", "log_every", "eval_every"):
        positive(f"trainer.{key}", getattr(t, key))
    if t.batch_size > n_train:
        raise ConfigError(
            f"trainer.batch_size={t.batch_size} is larger than the training split ({n_train} "
            f"images). Use a smaller batch size or more training data."
        )
    if not (t.device in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", t.device)):
        raise ConfigError(f"trainer.device={t.device!r} is not valid. Valid choices: {DEVICES}")
    if t.num_threads is not None:
        positive("trainer.num_threads", t.num_threads)
    choice("trainer.precision", t.precision, PRECISIONS)
    choice("trainer.compile", t.compile, COMPILE_MODES)
    if not (t.stack in ("auto", "off") or (t.stack.isdigit() and int(t.stack) >= 1)):
        raise ConfigError(
            f"trainer.stack={t.stack!r} is not valid. Valid choices: auto, off, or a number of "
            f"runs to train as one stacked net, e.g. trainer.stack=4."
        )


def _check_logger(lg: LoggerConfig) -> None:
    choice("logger.name", lg.name, ("local", "wandb"))
    choice("logger.mode", lg.mode, ("online", "offline", "disabled"))
    positive("logger.init_timeout", lg.init_timeout)


def _check_diagnostics(g: DiagnosticsConfig) -> None:
    choice("diagnostics.layer_stats", g.layer_stats, LAYER_STATS)
    positive("diagnostics.layer_stats_images", g.layer_stats_images)
    if any(i < 1 for i in g.grad_norms) or len(set(g.grad_norms)) != len(g.grad_norms):
        raise ConfigError(
            f"diagnostics.grad_norms={list(g.grad_norms)} is not valid: it lists distinct training "
            f"iterations >= 1 at which to record gradient norms, e.g. [1,10,100,1000], or [] for "
            f"none."
        )


def unreachable(cfg: Config) -> dict[str, list[int]]:
    """Milestones and gradient-norm iterations the run never reaches, by key (empty when none).

    A milestone at iteration m lowers the lr of the steps from m on, so one past
    ``schedule.iterations`` is never reached (one at it, the end, is a way to write "no decay");
    gradient norms are taken at iterations 1..iterations.
    """
    s = cfg.schedule
    out = {"schedule.milestones": [m for m in s.milestones if m > s.iterations]}
    out["diagnostics.grad_norms"] = [
        g for g in cfg.diagnostics.grad_norms if g > iteration_schedule(cfg).iterations
    ]
    return {k: v for k, v in out.items() if v}


def unreachable_message(cfg: Config, key: str, values: list[int], *, refused: bool = True) -> str:
    """Say which values the run never reaches; with the fix when refused, else as a warning."""
    s, shown, verb = cfg.schedule, ", ".join(map(str, values)), "is" if len(values) == 1 else "are"
    if key == "schedule.milestones":
        fix = (
            f"Give milestones up to {s.iterations} (the paper: 32000,48000 of 64000)."
            if refused
            else "This run is not the paper's schedule."
        )
        return (
            f"schedule.milestones={list(s.milestones)}: {shown} {verb} past schedule.iterations="
            f"{s.iterations}, so the lr never drops there. {fix}"
        )
    total = iteration_schedule(cfg).iterations
    fix = f"Give iterations in [1, {total}]." if refused else "They are left out."
    return (
        f"diagnostics.grad_norms={list(cfg.diagnostics.grad_norms)}: {shown} {verb} past the run's "
        f"last iteration ({total}), so no gradient norms are taken there. {fix}"
    )


def train_size(cfg: Config) -> int:
    """Images in the training split the config asks for."""
    return train_split_size(cfg.dataset)


def iteration_schedule(cfg: Config) -> ScheduleConfig:
    """The schedule counted in iterations (an epoch is ``train_size // batch_size`` steps, since
    every epoch drops its last partial batch)."""
    s = cfg.schedule
    if s.unit == "iterations":
        return s
    per_epoch = train_size(cfg) // cfg.trainer.batch_size
    return dataclasses.replace(
        s,
        unit="iterations",
        iterations=s.iterations * per_epoch,
        milestones=[m * per_epoch for m in s.milestones],
    )


def leaf_keys() -> dict[str, Any]:
    """Every valid dotted config key and its declared type."""
    keys = {
        f"{g}.{f.name}": f.type for g, s in GROUP_SCHEMAS.items() for f in dataclasses.fields(s)
    }
    keys.update({f.name: f.type for f in dataclasses.fields(Config) if f.name not in GROUP_SCHEMAS})
    return keys


def unknown_key_message(full_key: str) -> str:
    """Name the unknown key, the closest valid keys, and the valid keys of its group."""
    keys = leaf_keys()
    group = full_key.split(".")[0]
    last = full_key.split(".")[-1]
    names = difflib.get_close_matches(last, {k.split(".")[-1] for k in keys}, n=2, cutoff=0.7)
    close = sorted(
        (k for k in keys if k.split(".")[-1] in names), key=lambda k: not k.startswith(group + ".")
    )
    hint = f" Did you mean {' or '.join(repr(c) for c in close[:3])}?" if close else ""
    if group in GROUP_SCHEMAS:
        valid = f"Valid keys in '{group}': " + ", ".join(
            k for k in keys if k.startswith(group + ".")
        )
    else:
        top = [k for k in keys if "." not in k]
        valid = f"Valid top-level keys: {', '.join(top)}, and the groups {', '.join(GROUP_SCHEMAS)}"
    return f"Unknown config key '{full_key}'.{hint} {valid}."


def unknown_keys(node: Any) -> list[str]:
    """Dotted keys of a composed config that no schema declares (e.g. added with ``+key=``)."""
    valid = leaf_keys()
    return [
        k
        for k in flat(OmegaConf.to_container(node, resolve=False))
        if k not in valid and k.split(".")[0] != "hydra"
    ]


def override_pairs(overrides: Iterable[str]) -> list[tuple[str, str | None]]:
    """``(key, value)`` of each command-line override as Hydra's own parser reads it: the key
    without its ``+``/``++``/``~`` prefix, the value as Hydra writes it (None: a deletion; a sweep's
    values: as given). An override Hydra cannot parse is left out (Hydra refuses it itself)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser, pairs = OverridesParser.create(), []
    for o in overrides:
        try:
            ov = parser.parse_override(o)
        except OverrideParseException:
            continue
        if ov.is_sweep_override():  # several values: the text as given
            pairs.append((ov.key_or_group, o.partition("=")[2]))
        else:
            pairs.append(
                (ov.key_or_group, None if ov.value() is None else ov.get_value_element_as_str())
            )
    return pairs


def to_config(node: Any, overrides: list[str] | tuple = ()) -> Config:
    """Turn a composed DictConfig into a validated :class:`Config` with the depth resolved.

    ``overrides`` are the command line's: when it gives one spelling of the depth (``model.n`` or
    ``model.depth``), that one wins over the other spelling set by a preset.
    """
    extra = unknown_keys(node)
    if extra:
        raise ConfigError(unknown_key_message(extra[0]))
    obj = OmegaConf.to_object(node)
    if not isinstance(obj, Config):
        raise ConfigError("The composed config is not a resnet_repro config (base_config missing).")
    given = {k for k, _ in override_pairs(overrides)}
    if "model.n" in given and "model.depth" not in given:
        obj.model.depth = None
    elif "model.depth" in given and "model.n" not in given:
        obj.model.n = None
    cfg = validate(obj)
    # asked for on the command line, iterations a run never reaches are a mistake; set by a preset
    # (a short first look at a long recipe), the run warns about them (train.py)
    for key, values in unreachable(cfg).items():
        if key in given:
            raise ConfigError(unreachable_message(cfg, key, values))
    return cfg


def to_dict(cfg: Config) -> dict:
    """Plain nested dict of a config (for YAML files, W&B and comparisons)."""
    return dataclasses.asdict(cfg)


def flat(d: dict, prefix: str = "") -> dict:
    """Flatten a nested dict to dotted keys."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat(v, key + "."))
        else:
            out[key] = v
    return out
