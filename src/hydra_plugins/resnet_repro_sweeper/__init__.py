"""Hydra plugin package for resnet_repro's sweeper (Hydra loads sweepers only from
hydra_plugins)."""
