"""Value checks the config groups share (``config.py`` and the registries of ``models/`` and
``data/``): each raises :class:`ConfigError` naming the key, the bad value and what is valid.
No torch: the command line checks a config before torch is imported."""

from __future__ import annotations

import math
from typing import Any

from .errors import ConfigError


def choice(key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(
            f"{key}={value!r} is not valid. Valid choices: {', '.join(map(str, choices))}."
        )


def positive(key: str, value: float, *, allow_zero: bool = False) -> None:
    bound = ">= 0" if allow_zero else "> 0"
    if not math.isfinite(value):
        raise ConfigError(f"{key}={value} is not valid: it must be a finite number {bound}.")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key}={value} is not valid: it must be {bound}.")
