"""Fuel-break planning: the planners (baselines and the trained policy) and their evaluation."""
