"""Check every job's config before any job starts, and explain config errors in one message.

Hydra composes and validates configs job by job, after the sweep has started, and its messages
name the key but not the valid choices. Here the command line is parsed with Hydra's own parser,
a sweep is expanded with Hydra's basic sweeper, every job's config is composed with Hydra's compose
API and validated, so a bad value anywhere in a sweep stops it before the first job runs.
"""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from .config import PROTOCOLS, SHORTCUTS, leaf_keys, to_config, unknown_key_message
from .data import check_protocol
from .errors import ConfigError

MAX_JOBS_CHECKED = 1000

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


def job_overrides(argv: list[str]) -> tuple[list[list[str]], str | None] | None:
    """The override lists of every job the command line would run, or None to skip the check."""
    args = get_args_parser().parse_args(argv)
    if args.help or args.hydra_help or args.info or args.cfg or args.shell_completion or args.config_dir or args.config_path:
        return None
    overrides = [o for o in args.overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    multirun = args.multirun or any(o.replace(" ", "") == "hydra.mode=MULTIRUN" for o in args.overrides)
    parsed = OverridesParser.create().parse_overrides(overrides)
    if not multirun:
        sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
        if sweeps:
            raise ConfigError(
                f"{sweeps[0]} is a sweep over several values: add -m (--multirun) to run one job per value."
            )
        return [overrides], args.config_name
    batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return [job for batch in batches for job in batch], args.config_name


def preflight(argv: list[str], conf_dir: Path) -> int:
    """Compose and validate the config of every job; raise ConfigError on the first bad one."""
    plan = job_overrides(argv)
    if plan is None:
        return 0
    jobs, config_name = plan
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base="1.3"):
        for overrides in jobs[:MAX_JOBS_CHECKED]:
            try:
                cfg = to_config(compose(config_name or "config", overrides=list(overrides)), overrides)
                check_protocol(cfg.dataset)
            except ConfigError as ex:
                raise _in_job(ex, overrides, len(jobs)) from None
            except (HydraException, OmegaConfBaseException) as ex:
                msg = explain(ex)
                raise _in_job(ConfigError(msg or str(ex)), overrides, len(jobs)) from None
    GlobalHydra.instance().clear()
    return len(jobs)


def _in_job(ex: ConfigError, overrides, n_jobs: int) -> ConfigError:
    if n_jobs > 1:
        return ConfigError(f"{ex} (in sweep job: {' '.join(overrides)}; no job was started)")
    return ex
