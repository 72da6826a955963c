"""resnet_repro: a Hydra-configured reproduction harness for He et al. (CVPR 2016)."""

__version__ = "0.1.0"
