"""Vectorized environments: many fuel-break environments stepped together on one of several backends."""
