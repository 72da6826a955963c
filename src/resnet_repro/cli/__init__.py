"""The command lines: resnet-train (train.py; ``python -m resnet_repro.cli``), its checks before a
run starts (preflight.py), and resnet-eval (evaluate.py).
"""
