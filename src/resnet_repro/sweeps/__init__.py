"""Sweeps: every job's name and the sweep manifest (sweep.py); the sweeper itself is
``hydra_plugins.resnet_repro_sweeper`` (Hydra finds sweepers there).
"""
