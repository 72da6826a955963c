"""The device a run lands on: picking it, refusing one this machine does not have, naming it,
and waiting for the work queued on it."""

from __future__ import annotations

import os
import platform

import torch

from ..errors import ResnetReproError


def pick_device(name: str, job_num: int | None = None) -> torch.device:
    """``auto``: CUDA when present; a multirun's jobs spread over the GPUs by job number."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", (job_num or 0) % torch.cuda.device_count())
    check_device(name)
    return torch.device(name)


def check_device(name: str) -> None:
    """Refuse a ``trainer.device`` this machine does not have, naming the ones it has."""
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ResnetReproError(
                f"trainer.device={name} but no CUDA device is available. Use trainer.device=cpu or "
                f"auto."
            )
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            have = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
            raise ResnetReproError(
                f"trainer.device={name} but this machine has {count} CUDA device(s) ({have}). "
                f"Use one of those, or auto."
            )
    elif name == "mps" and not torch.backends.mps.is_available():
        raise ResnetReproError(
            "trainer.device=mps but no MPS device is available. Use trainer.device=cpu or auto."
        )


TORCH_THREADS = (
    torch.get_num_threads()
)  # torch's own count (every core, or OMP_NUM_THREADS), at start


def set_threads(n: int | None) -> str:
    """torch's CPU threads for a run (``trainer.num_threads``; None: torch's own count, so a sweep's
    job never keeps an earlier job's); the log's line on them."""
    torch.set_num_threads(n or TORCH_THREADS)
    why = f"trainer.num_threads={n}" if n else "torch's count; trainer.num_threads=N to choose"
    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    return f"CPU threads: {torch.get_num_threads()} ({why}; OMP_WAIT_POLICY={policy})"


def device_sync(device: torch.device) -> None:
    """Wait for the work queued on ``device``: steps run asynchronously (CUDA graphs most of
    all)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def platform_cpu(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's name and core count for the summary's ``device_name`` on a CPU run, e.g. "AMD EPYC
    (2 cores)": Linux's model name where it tells one, else the platform's processor or machine."""
    name = ""
    try:
        with open(cpuinfo) as f:
            name = next(
                (line.partition(":")[2].strip() for line in f if line.startswith("model name")), ""
            )
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    cores = os.cpu_count()
    return f"{name} ({cores} cores)" if cores else name
