"""resnet_repro: a Hydra-configured reproduction harness for He et al. (CVPR 2016).

``resnet_repro.load_model(path)``: a run's trained net (analysis/weights.py), imported on first use
so that the command lines start without torch.
"""

import importlib

__version__ = "0.1.0"
__all__ = ["load_model"]


def __getattr__(name: str):
    # a lazy name, not an import of the package: the record's modules import __version__ from here
    if name == "load_model":
        return importlib.import_module(".analysis.weights", __name__).load_model
    raise AttributeError(f"module 'resnet_repro' has no attribute {name!r}")
