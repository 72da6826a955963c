"""The run record on disk: its files and their atomic writes (files.py), the checkpoint
(checkpoint.py), run.lock (lock.py), and the record's config, tables, summary and provenance
(run_record.py). Below training: nothing here imports it.
"""
