"""Check every job's config before any job starts, and explain config errors in one message.

Hydra's own messages name a bad key but not the valid choices. Here a single run's command line is
parsed with Hydra's parser, its config composed with Hydra's compose API and validated, before
Hydra makes a run directory. A sweep's jobs are all checked the same way by the sweeper
(``hydra_plugins.resnet_repro_sweeper``) before its first job starts.

Why not Hydra's callback API (``on_run_start``): Hydra calls callbacks only after it has composed
the config, and a composition error (an unknown key, a bad group choice) is printed by Hydra itself
as several lines with exit status 1 before any callback runs. The one-line errors naming the valid
choices need the config composed here first, with Hydra's compose API.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from ..config import Config, leaf_keys, to_config, to_dict, unknown_key_message
from ..data.registry import PROTOCOLS
from ..errors import ConfigError, ResnetReproError
from ..models.registry import SHORTCUTS
from ..record.files import CONFIG_FILE, LOCK_FILE

_EXPECTED = {
    "model.n": "a positive integer (depth = 6n+2: n=3,5,7,9,18 give 20,32,44,56,110)",
    "model.depth": "an integer 6n+2: 20, 32, 44, 56, 110, 1202, ...",
    "model.shortcut": f"one of {', '.join(SHORTCUTS)}",
    "dataset.protocol": f"one of {', '.join(PROTOCOLS)}",
}


def _expected(full_key: str) -> str:
    if full_key in _EXPECTED:
        return _EXPECTED[full_key]
    typ = str(leaf_keys().get(full_key, ""))
    for word, text in (
        ("list", "a list such as [32000,48000]"),
        ("bool", "true or false"),
        ("float", "a number"),
        ("int", "an integer"),
        ("str", "a string"),
    ):
        if word in typ:
            return text + (" or null" if "None" in typ else "")
    return "a value of the schema's type"


def explain(ex: BaseException) -> str | None:
    """One clear message for a Hydra/OmegaConf composition error, or None if it is not one."""
    if isinstance(ex, ConfigError):
        return str(ex)
    if isinstance(ex, MissingConfigException):
        # Hydra names the missing option and lists the available ones; drop its search-path dump
        return " ".join(str(ex).split("Config search path")[0].split())
    cause = ex
    while cause.__cause__ is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and getattr(
        cause, "full_key", None
    ):
        return unknown_key_message(cause.full_key)
    if isinstance(cause, ValidationError) and getattr(cause, "full_key", None):
        msg = (
            str(cause.msg).split("\n")[0]
            if getattr(cause, "msg", None)
            else str(cause).split("\n")[0]
        )
        return f"Bad value for {cause.full_key}: {msg}. Expected {_expected(cause.full_key)}."
    if isinstance(ex, (HydraException, OmegaConfBaseException)):
        text = " ".join(str(ex).split())
        if cause is not ex:
            text += " " + " ".join(str(cause).split())
        return text
    return None


def preflight(argv: list[str], conf_dir: Path) -> Start | Literal[False]:
    """Compose and validate a single run's config; raise ConfigError when it is bad.

    Multiruns (``-m``, or a preset that sets ``hydra.mode: MULTIRUN``) are left to the sweeper,
    which validates every job before the first one starts. Returns the run's :class:`Start` (what
    existed before it, so that a start that fails can be taken back), or False when no check ran.
    """
    args = _read(argv)
    if args is None or _for_hydra(args) or args.cfg:
        return False
    for o in args.overrides:
        _parse(o)  # a syntax error, named by its override, in sweeps too
    from ..training.stacking import refuse_members_by_hand

    refuse_members_by_hand(args.overrides)  # in sweeps too
    if args.multirun:
        return False
    job = _compose(args, conf_dir, check_data=True)
    if job is None:
        return False  # the preset sweeps: the sweeper checks every job
    earlier = earlier_run_dir(job.cfg, job.run_dir, args.overrides)
    if earlier is not None:
        job = job._replace(run_dir=earlier)
    check_can_start(job.cfg, job.run_dir)
    return Start.note(job, earlier=earlier is not None)


def job_config(argv: list[str], conf_dir: Path) -> str | None:
    """``--cfg job`` (``-c job``) for a single run: its config as the run will use it, as YAML.

    Hydra's ``--cfg job`` prints the composed config before validation, where the depth has one
    spelling only (``model.depth=56`` shows ``n: null``); this is the validated config instead,
    with both spellings and the derived fields (``model.in_channels``, ``schedule.warmup``) filled
    in and every interpolation resolved (so ``--resolve`` changes nothing), in the YAML of the
    run's ``config.yaml``; ``--package model`` prints one part, as Hydra does. A bad config raises
    ConfigError, as the run would. Returns None when Hydra answers the command line itself:
    ``--cfg hydra|all``, a multirun, a package that is not there, or a question such as ``--help``.
    """
    args = _read(argv)
    if args is None or _for_hydra(args) or args.cfg != "job" or args.multirun:
        return None
    for o in args.overrides:
        _parse(o)
    job = _compose(args, conf_dir, check_data=False)
    if job is None:
        return None
    cfg = to_dict(job.cfg)
    if args.package in (None, "_global_"):
        return yaml.safe_dump(cfg, sort_keys=False)
    part = OmegaConf.select(OmegaConf.create(cfg), args.package)
    if part is None:
        return None  # Hydra says the package is not there
    if not isinstance(part, DictConfig | ListConfig):
        return f"{part}\n"
    return f"# @package {args.package}\n" + yaml.safe_dump(
        OmegaConf.to_container(part), sort_keys=False
    )


class _Job(NamedTuple):
    cfg: Config
    run_dir: str | None  # hydra.run.dir; None when only a running Hydra resolves it
    log_name: str  # Hydra's log file in the run directory (<hydra.job.name>.log)


def _read(argv: list[str]) -> argparse.Namespace | None:
    try:
        return _ARGS.parse_args(argv)
    except (
        argparse.ArgumentError
    ):  # not a command line we read (--version, a malformed flag): Hydra answers it
        return None


def _for_hydra(args: argparse.Namespace) -> bool:
    """A question Hydra answers (``--help``, ``--info``, ...) or a config not in ``conf/``."""
    return bool(
        args.help
        or args.hydra_help
        or args.info
        or args.shell_completion
        or args.config_dir
        or args.config_path
        or args.experimental_rerun
    )


def _compose(args: argparse.Namespace, conf_dir: Path, *, check_data: bool) -> _Job | None:
    """A single run's validated config (None when a preset makes it a multirun), composed from
    ``conf_dir`` with the command line's overrides; ``check_data`` also checks the data protocol
    (which imports torch)."""
    hydra_ov = [o for o in args.overrides if o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    overrides = [o for o in args.overrides if o not in hydra_ov]
    sweeps = [o for o in overrides if _parse(o).is_sweep_override()]
    plain = [o for o in overrides if o not in sweeps]
    name = args.config_name or "config"
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base="1.3"):
            try:
                full = compose(name, overrides=plain + hydra_ov, return_hydra_config=True)
                if full.hydra.mode == RunMode.MULTIRUN:
                    return None
                if sweeps:
                    raise ConfigError(
                        f"{sweeps[0]} is a sweep over several values: add -m (--multirun) to run "
                        f"one job per value."
                    )
                cfg = to_config(compose(name, overrides=overrides), overrides)
                if check_data:  # imports torch: only for a config that is valid so far
                    from ..data import check_protocol

                    check_protocol(cfg.dataset)
                return _Job(cfg, _run_dir(full), f"{full.hydra.job.name}.log")
            except (HydraException, OmegaConfBaseException) as ex:
                raise ConfigError(explain(ex) or str(ex)) from None
    finally:
        GlobalHydra.instance().clear()


class _QuietParser(argparse.ArgumentParser):
    def error(self, message: str):  # Hydra prints its own usage errors: raise, print nothing
        raise argparse.ArgumentError(None, message)


def _hydra_command_line() -> argparse.ArgumentParser:
    """The flags of Hydra's command line (``--help``, ``-m``, ``--cfg``, ...), to tell a single
    run's overrides from a question or a sweep for Hydra; Hydra itself parses the line again."""
    p = _QuietParser(add_help=False, allow_abbrev=False)
    for flags in (
        ("--help", "-h"),
        ("--hydra-help",),
        ("--resolve",),
        ("--run", "-r"),
        ("--multirun", "-m"),
        ("--shell-completion", "-sc"),
    ):
        p.add_argument(*flags, action="store_true")
    for flags in (
        ("--cfg", "-c"),
        ("--package", "-p"),
        ("--config-path", "-cp"),
        ("--config-name", "-cn"),
        ("--config-dir", "-cd"),
        ("--experimental-rerun",),
    ):
        p.add_argument(*flags)
    p.add_argument("--info", "-i", nargs="?", const="all")
    p.add_argument("overrides", nargs="*")
    return p


_ARGS = _hydra_command_line()


def check_can_start(cfg, run_dir: str | None) -> None:
    """The checks a run's start makes, before Hydra writes anything into its directory: the device
    exists; the directory can be written, is not in use, and holds no record of another run."""
    from ..record.lock import RunLock
    from ..record.run_record import RunRecord, check_writable
    from ..training.device import check_device

    if cfg.trainer.device != "auto":
        check_device(cfg.trainer.device)
    if run_dir is None:
        return
    check_writable(run_dir)
    rec = RunRecord(run_dir, create=False)
    if rec.dir.is_dir():
        RunLock(rec.dir).check_free()
        rec.checkpoints.check_paths()
        rec.check_resumable(to_dict(cfg), None, rec.read_summary() or {}, checkpoint_known=False)


def earlier_run_dir(cfg, run_dir: str | None, overrides: list[str]) -> str | None:
    """Where this run was recorded before a single run's folder carried its overrides
    (``runs/<experiment>/<name>``), when that folder holds this run's record and the folder named
    now does not exist yet: such a run goes on where it is. None otherwise (also when the command
    line sets ``hydra.run.dir`` itself)."""
    from ..record.run_record import RunRecord, summary_config

    if run_dir is None or any(o.lstrip("+").startswith("hydra.run.dir=") for o in overrides):
        return None
    now, old = Path(run_dir), Path(run_dir).parent / cfg.name
    if old == now or os.path.lexists(now) or not (old / CONFIG_FILE).is_file() or "'" in str(old):
        return None
    rec = RunRecord(old, create=False)
    try:
        summary = rec.read_summary() or {}
        rec.check_same_run(to_dict(cfg), None, summary_config(summary), extendable=True)
    except ResnetReproError:
        return None  # another recipe's record: this run gets its own folder
    return str(old)


@dataclass(frozen=True)
class NewFolder:
    """A folder that did not exist when the command started, and the nearest folder above it that
    did."""

    path: Path
    base: Path

    @classmethod
    def note(cls, path: str | Path) -> NewFolder | None:
        """``path`` (resolved) when nothing is there yet, else None: what exists is never taken
        back."""
        p = Path(path).resolve()
        if os.path.lexists(p):
            return None
        base = p.parent
        while not os.path.lexists(base) and base != base.parent:
            base = base.parent
        return cls(p, base)

    def remove_empty_parents(self) -> None:
        """The empty folders this command made above ``path`` (up to ``base``, which stays)."""
        d = self.path.parent
        while self.base in d.parents:
            try:
                d.rmdir()
            except OSError:  # not empty (or not ours to remove): the folders above stay too
                return
            d = d.parent


@dataclass(frozen=True)
class Start:
    """A single run's start as the command found it before Hydra wrote anything: its run directory
    and data root when they did not exist yet, so that a start that fails leaves nothing behind."""

    run_dir: NewFolder | None
    data_root: NewFolder | None
    log_name: str = "train.log"
    existing: Path | None = (
        None  # the run directory, when it existed: what it held of the leftovers
    )
    had: frozenset = frozenset()
    where: str = ""  # the run directory, as the command line gives it
    name: str = ""  # the run's name
    # the run goes on in the folder it was recorded in before (earlier_run_dir)
    earlier: bool = False

    @classmethod
    def note(cls, job: _Job, earlier: bool = False) -> Start:
        root, d = job.cfg.dataset.root, job.run_dir
        existing = Path(d).resolve() if d is not None and Path(d).is_dir() else None
        had = frozenset(p.name for p in existing.iterdir()) if existing else frozenset()
        return cls(
            NewFolder.note(d) if d is not None else None,
            NewFolder.note(root) if root else None,
            job.log_name,
            existing,
            had,
            str(d or ""),
            job.cfg.name,
            earlier,
        )

    def hydra_overrides(self) -> list[str]:
        """What Hydra needs beyond the command line: the earlier folder of a run recorded there."""
        return [f"hydra.run.dir='{self.where}'"] if self.earlier else []

    def moved_note(self) -> str:
        """The line that says a run goes on in the folder it was recorded in before."""
        return (
            f"resnet-train: {self.where} holds this run, recorded before a run's folder was named "
            f"from its overrides; it goes on there.\n"
            if self.earlier
            else ""
        )

    def leftovers(self) -> set[str]:
        return {".hydra", self.log_name, LOCK_FILE}

    def undo(self, output_dir: str | None = None) -> None:
        """Take back what a failed start made: the run directory when it holds only what Hydra and
        the start wrote before the run record began (``.hydra/``, the log, ``run.lock``), and the
        data root when it is still empty. ``output_dir`` is the directory Hydra ran the job in, when
        the job started: a directory other than the one noted here is left alone."""
        new, ours = (
            self.run_dir,
            output_dir is None
            or Path(output_dir).resolve()
            in (self.run_dir.path if self.run_dir else None, self.existing),
        )
        if new is not None and ours:
            if _remove_unstarted_run_dir(new.path, self.leftovers()):
                new.remove_empty_parents()
        elif (
            self.existing is not None and ours
        ):  # a folder that was there: only what this start added to it
            _remove_added_leftovers(self.existing, self.leftovers() - self.had)
        new = self.data_root
        if new is not None and _remove_empty_tree(new.path):
            new.remove_empty_parents()


def _remove_unstarted_run_dir(d: Path, leftovers: set[str]) -> bool:
    """Remove run directory ``d`` if it holds only ``leftovers`` and no live process holds its lock.

    Anything else there (``config.yaml``, the first file of a run record, or a file of anyone
    else's) keeps the directory whole. The lock is held while removing, so a run of the same
    directory started meanwhile by another command is never removed under it.
    """
    if d.is_symlink() or not d.is_dir() or not {p.name for p in d.iterdir()} <= leftovers:
        return False
    from ..record.lock import RunLock

    lock = RunLock(d)
    if not lock.try_acquire():
        return False  # another process runs here now: its directory
    try:
        if not {p.name for p in d.iterdir()} <= leftovers:
            return False
        _close_logs_in(d)  # Hydra's log file handler: nothing is written there once it is gone
        shutil.rmtree(d, ignore_errors=True)
    finally:
        lock.release()
    return not os.path.lexists(d)


def _remove_added_leftovers(d: Path, added: set[str]) -> None:
    """Remove the leftovers a failed start added to a run directory that was already there (its
    own files stay), unless a live process holds its lock (a run started there meanwhile)."""
    from ..record.lock import RunLock

    if d.is_symlink() or not d.is_dir():
        return
    lock = RunLock(d)
    if not lock.try_acquire():
        return
    try:
        _close_logs_in(d)
        for name in added:
            p = d / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            elif os.path.lexists(p):
                p.unlink(missing_ok=True)
    finally:
        lock.release()


def _remove_empty_tree(d: Path) -> bool:
    """Remove ``d`` if it holds nothing but empty folders (a download that failed before
    writing)."""
    if d.is_symlink() or not d.is_dir():
        return False
    folders = [d]
    for top, dirs, files in os.walk(d):
        if files or any(os.path.islink(os.path.join(top, x)) for x in dirs):
            return False
        folders += [Path(top, x) for x in dirs]
    try:
        for f in reversed(folders):  # the deepest first
            f.rmdir()
    except OSError:
        return False
    return True


def _close_logs_in(d: Path) -> None:
    """Close and detach the logging file handlers writing into ``d`` (Hydra's ``train.log``)."""
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for lg in loggers:
        for h in list(lg.handlers):
            if isinstance(h, logging.FileHandler) and Path(h.baseFilename).resolve().is_relative_to(
                d
            ):
                lg.removeHandler(h)
                h.close()


def _run_dir(full) -> str | None:
    """A single run's directory (``hydra.run.dir``), or None when it resolves only inside Hydra."""
    try:
        return str(OmegaConf.select(full, "hydra.run.dir", throw_on_resolution_failure=True))
    except Exception:  # noqa: BLE001 - e.g. ${hydra:...}, which only a running Hydra resolves
        return None


def _parse(override: str):
    """One command-line override, parsed; a syntax error names the override and the grammar."""
    try:
        (parsed,) = OverridesParser.create().parse_overrides([override])
    except HydraException as ex:
        why = " ".join(str(ex).split("See https://")[0].split()).rstrip(". ")
        why = why.removeprefix(f"Error parsing override '{override}'").strip()
        raise ConfigError(
            f"Cannot parse the override {override!r} ({why}). Check its brackets and quotes; "
            f"Hydra's grammar: https://hydra.cc/docs/advanced/override_grammar/basic/"
        ) from None
    return parsed
