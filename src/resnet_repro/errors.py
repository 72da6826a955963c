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


RERUN_TO_RESUME = (
    "Rerun the same command to resume."  # a single run's directory is fixed by its command
)


class Preempted(KeyboardInterrupt):
    """SIGTERM (what SLURM sends on preemption) or Ctrl-C stopped the run after writing a
    checkpoint.

    A KeyboardInterrupt, so a sweep stops too instead of starting its next job. ``signum`` is the
    signal that stopped it (the exit status is 128 + signum, as if the signal had ended the
    process).
    """

    def __init__(self, message: str, signum: int = 15):
        super().__init__(message)
        self.signum = signum

    def __reduce__(self):  # parallel launchers pickle a job's exception back to the sweep
        return type(self), (str(self), self.signum)
