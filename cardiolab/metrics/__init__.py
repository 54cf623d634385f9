"""Evaluation metrics: cardiac function from label maps (function.py), image fidelity, features,
temporal consistency, shape and downstream utility (one module each)."""
