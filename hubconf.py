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
from pathlib import Path as _Path  # not an entry point: torch.hub lists public callables

ROOT = _Path(__file__).resolve().parent
if (ROOT / "src" / "resnet_repro").is_dir() and str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))  # a checkout without the package installed

dependencies = ["torch", "torchvision", "omegaconf", "hydra"]


# entry point: (depth, residual, what the paper says of it)
NETS = {
    "resnet20": (20, True, "ResNet-20 (0.27M params): Table 6, 8.75% test error in the paper."),
    "resnet32": (32, True, "ResNet-32 (0.46M params): Table 6, 7.51%."),
    "resnet44": (44, True, "ResNet-44 (0.66M params): Table 6, 7.17%."),
    "resnet56": (56, True, "ResNet-56 (0.85M params): Table 6, 6.97%."),
    "resnet110": (110, True, "ResNet-110 (1.7M params): Table 6, 6.43%."),
    "plain20": (20, False, "The plain 20-layer net (no shortcuts) of Figure 6."),
    "plain32": (32, False, "The plain 32-layer net of Figure 6."),
    "plain44": (44, False, "The plain 44-layer net of Figure 6."),
    "plain56": (56, False, "The plain 56-layer net of Figure 6."),
}


def _entry(name: str, depth: int, residual: bool, doc: str):
    def entry(pretrained=False, schedule="paper", seed=0, device="cpu"):
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

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = f"{doc} pretrained=True: the published run's weights (schedule, seed)."
    return entry


for _name, (_depth, _residual, _doc) in NETS.items():
    globals()[_name] = _entry(_name, _depth, _residual, _doc)
