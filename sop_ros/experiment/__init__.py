"""`sop experiment`'s orchestration: the paper's comparisons run on a simulated fleet.

plan.py decides which runs exist, fleet_run.py runs one fleet in its own directory,
offline_training.py trains the non-SOP baselines, checkpoint_eval.py evaluates checkpoints,
results.py turns finished runs into CSV, markdown, PNG plots and summary.json.
"""
