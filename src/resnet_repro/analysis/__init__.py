"""Reading ended runs: runs to pandas (results.py), resnet-report (report.py), the W&B Report
(wandb_report.py), resnet-export (export.py).
"""
