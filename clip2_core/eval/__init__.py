"""Evaluation: the paper's recognition protocol (and, later, detection matching for replays)."""
