"""Durable storage: the learner's episode store, the robot's spool, the checkpoint store, atomic file helpers."""
