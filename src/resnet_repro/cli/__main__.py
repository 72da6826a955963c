"""``python -m resnet_repro.cli``: resnet-train. It runs the imported module's ``main``: parallel
launchers (joblib, submitit) pickle the task function by reference, which ``__main__`` cannot
give."""

from resnet_repro.cli.train import main

main()
