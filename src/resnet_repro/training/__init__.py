"""Training a run or a stack of runs: the one loop (train.py, train_stack.py), the step and its fast
path (step.py), the run's state, sinks, schedule and diagnostics, the device, trainer.stack
(stacking.py), timing (speed.py) and the W&B mirror.
"""
