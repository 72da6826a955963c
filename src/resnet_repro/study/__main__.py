"""``python -m resnet_repro.study``: the same as ``resnet-study``."""

from .cli import main

main()
