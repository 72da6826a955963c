"""torch.hub entry points: the paper's CIFAR-10 nets, untrained or with the weights published here.

    import torch
    net = torch.hub.load("/path/to/resnet_repro", "resnet20", source="local", pretrained=True)
    net = torch.hub.load("/path/to/resnet_repro", "plain32", source="local", pretrained=True,
                         schedule="paper_8k")
    logits = net(images)   # uint8 CIFAR-10 images (N, 3, 32, 32), or floats in [0, 1]

``pretrained=True`` loads the ``weights.pt`` of the published run (``analysis/results/``) of that
net, schedule (``paper``: the paper's 64k iterations; ``paper_8k``: 1/8 of it) and seed; the net
subtracts its training split's per-pixel mean itself (``resnet_repro.load_model``). Which runs
have published weights: ``analysis/results/*/*/weights.pt`` (README, Trained weights). Scoring a
published run's weights with ``resnet-eval <its weights.pt> --data-root /path/to/data`` gives its
recorded error.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if (ROOT / "src" / "resnet_repro").is_dir() and str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))  # a checkout without the package installed

dependencies = ["torch", "torchvision", "omegaconf", "hydra"]


def _net(depth: int, residual: bool, pretrained: bool, schedule: str, seed: int, device: str):
    from resnet_repro.analysis.weights import cifar_net

    return cifar_net(
        depth,
        residual,
        pretrained=pretrained,
        schedule=schedule,
        seed=seed,
        device=device,
        results=ROOT / "analysis" / "results",
    )


def resnet20(pretrained=False, schedule="paper", seed=0, device="cpu"):
    """ResNet-20 (0.27M params): Table 6, 8.75% test error in the paper."""
    return _net(20, True, pretrained, schedule, seed, device)


def resnet32(pretrained=False, schedule="paper", seed=0, device="cpu"):
    """ResNet-32 (0.46M params): Table 6, 7.51%."""
    return _net(32, True, pretrained, schedule, seed, device)


def resnet44(pretrained=False, schedule="paper", seed=0, device="cpu"):
    """ResNet-44 (0.66M params): Table 6, 7.17%."""
    return _net(44, True, pretrained, schedule, seed, device)


def resnet56(pretrained=False, schedule="paper", seed=0, device="cpu"):
    """ResNet-56 (0.85M params): Table 6, 6.97%."""
    return _net(56, True, pretrained, schedule, seed, device)


def resnet110(pretrained=False, schedule="paper", seed=0, device="cpu"):
    """ResNet-110 (1.7M params): Table 6, 6.43%."""
    return _net(110, True, pretrained, schedule, seed, device)


def plain20(pretrained=False, schedule="paper", seed=0, device="cpu"):
    """The plain 20-layer net (no shortcuts) of Figure 6."""
    return _net(20, False, pretrained, schedule, seed, device)


def plain32(pretrained=False, schedule="paper", seed=0, device="cpu"):
    """The plain 32-layer net of Figure 6."""
    return _net(32, False, pretrained, schedule, seed, device)


def plain44(pretrained=False, schedule="paper", seed=0, device="cpu"):
    """The plain 44-layer net of Figure 6."""
    return _net(44, False, pretrained, schedule, seed, device)


def plain56(pretrained=False, schedule="paper", seed=0, device="cpu"):
    """The plain 56-layer net of Figure 6."""
    return _net(56, False, pretrained, schedule, seed, device)
