"""Check every job's config before any job starts, and explain config errors in one message.

Hydra's own messages name a bad key but not the valid choices. Here a single run's command line is
parsed with Hydra's parser, its config composed with Hydra's compose API and validated, before
Hydra makes a run directory. A sweep's jobs are all checked the same way by the sweeper
(``hydra_plugins.resnet_repro_sweeper``) before its first job starts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from hydra.types import RunMode
from omegaconf import OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from .config import leaf_keys, to_config, unknown_key_message
from .data.registry import PROTOCOLS
from .errors import ConfigError
from .models.registry import SHORTCUTS

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
    for word, text in (("list", "a list such as [32000,48000]"), ("bool", "true or false"),
                       ("float", "a number"), ("int", "an integer"), ("str", "a string")):
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
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and getattr(cause, "full_key", None):
        return unknown_key_message(cause.full_key)
    if isinstance(cause, ValidationError) and getattr(cause, "full_key", None):
        msg = str(cause.msg).split("\n")[0] if getattr(cause, "msg", None) else str(cause).split("\n")[0]
        return f"Bad value for {cause.full_key}: {msg}. Expected {_expected(cause.full_key)}."
    if isinstance(ex, (HydraException, OmegaConfBaseException)):
        text = " ".join(str(ex).split())
        if cause is not ex:
            text += " " + " ".join(str(cause).split())
        return text
    return None


def preflight(argv: list[str], conf_dir: Path) -> bool:
    """Compose and validate a single run's config; raise ConfigError when it is bad.

    Multiruns (``-m``, or a preset that sets ``hydra.mode: MULTIRUN``) are left to the sweeper,
    which validates every job before the first one starts. Returns whether a check ran.
    """
    try:
        args = _ARGS.parse_args(argv)
    except argparse.ArgumentError:  # not a command line we read (--version, a malformed flag): Hydra answers it
        return False
    if (args.help or args.hydra_help or args.info or args.cfg or args.shell_completion or args.config_dir
            or args.config_path or args.experimental_rerun):
        return False
    parsed = [_parse(o) for o in args.overrides]  # a syntax error, named by its override, in sweeps too
    if args.multirun:
        return False
    hydra_ov = [o for o in args.overrides if o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    overrides = [o for o in args.overrides if o not in hydra_ov]
    sweeps = [p.input_line for p in parsed if p.is_sweep_override() and p.input_line in overrides]
    plain = [o for o in overrides if o not in sweeps]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base="1.3"):
            try:
                full = compose(args.config_name or "config", overrides=plain + hydra_ov, return_hydra_config=True)
                if full.hydra.mode == RunMode.MULTIRUN:
                    return False  # the preset sweeps: the sweeper checks every job
                if sweeps:
                    raise ConfigError(
                        f"{sweeps[0]} is a sweep over several values: add -m (--multirun) to run one job per value."
                    )
                cfg = to_config(compose(args.config_name or "config", overrides=overrides), overrides)
                from .data import check_protocol  # torch: only for a config that is valid so far

                check_protocol(cfg.dataset)
                run_dir = _run_dir(full)
            except (HydraException, OmegaConfBaseException) as ex:
                raise ConfigError(explain(ex) or str(ex)) from None
    finally:
        GlobalHydra.instance().clear()
    check_can_start(cfg, run_dir)
    return True


class _QuietParser(argparse.ArgumentParser):
    def error(self, message: str):  # Hydra prints its own usage errors: raise, print nothing
        raise argparse.ArgumentError(None, message)


def _hydra_command_line() -> argparse.ArgumentParser:
    """The flags of Hydra's command line (``--help``, ``-m``, ``--cfg``, ...), to tell a single run's
    overrides from a question or a sweep for Hydra; Hydra itself parses the line again."""
    p = _QuietParser(add_help=False, allow_abbrev=False)
    for flags in (("--help", "-h"), ("--hydra-help",), ("--resolve",), ("--run", "-r"), ("--multirun", "-m"),
                  ("--shell-completion", "-sc")):
        p.add_argument(*flags, action="store_true")
    for flags in (("--cfg", "-c"), ("--package", "-p"), ("--config-path", "-cp"), ("--config-name", "-cn"),
                  ("--config-dir", "-cd"), ("--experimental-rerun",)):
        p.add_argument(*flags)
    p.add_argument("--info", "-i", nargs="?", const="all")
    p.add_argument("overrides", nargs="*")
    return p


_ARGS = _hydra_command_line()


def check_can_start(cfg, run_dir: str | None) -> None:
    """The checks a run's start makes, before Hydra writes anything into its directory: the device
    exists; the directory can be written, is not in use, and holds no record of another run."""
    from .config import to_dict
    from .device import check_device
    from .record import RunRecord, check_writable

    if cfg.trainer.device != "auto":
        check_device(cfg.trainer.device)
    if run_dir is None:
        return
    check_writable(run_dir)
    rec = RunRecord(run_dir, create=False)
    if rec.dir.is_dir():
        rec.check_not_in_use()
        rec.check_checkpoint_paths()
        rec.check_resumable(to_dict(cfg), None, rec.read_summary() or {}, checkpoint_known=False)


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
            f"Cannot parse the override {override!r} ({why}). Check its brackets and quotes; Hydra's grammar: "
            f"https://hydra.cc/docs/advanced/override_grammar/basic/"
        ) from None
    return parsed
