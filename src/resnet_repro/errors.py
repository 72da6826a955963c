"""Errors the user can act on. Each carries one message that names the problem and the fix."""


class ResnetReproError(Exception):
    """Base class: caught by the command-line entry point and printed without a traceback."""


class ConfigError(ResnetReproError):
    """A config key or value is not valid."""


class DataError(ResnetReproError):
    """A dataset file is missing, truncated, corrupt or fails its checksum."""


class CheckpointError(ResnetReproError):
    """A checkpoint cannot be loaded or belongs to another config."""


class RunDirError(ResnetReproError):
    """The run directory holds another run or cannot be written."""


class Diverged(ResnetReproError):
    """The training loss became NaN or infinite."""


class Preempted(KeyboardInterrupt):
    """SIGTERM (what SLURM sends on preemption) stopped the run after writing a checkpoint.

    A KeyboardInterrupt, so a sweep stops too instead of starting its next job.
    """
