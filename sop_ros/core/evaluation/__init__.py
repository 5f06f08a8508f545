"""Evaluation: the rollout harness, fleet metrics and the scripted-operator audit."""
