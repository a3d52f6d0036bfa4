"""firebreak_exp: train deep Q-learning agents to place fuel breaks on raster landscapes.

The public names are imported lazily, so that environment worker processes do
not pay for torch or MLflow.
"""
from importlib import import_module

_EXPORTS = {
    "compose": "firebreak_exp.api",
    "FuelBreakEnv": "firebreak_exp.environment",
    "VectorizedFireEnv": "firebreak_exp.vector.env",
    "make_env": "firebreak_exp.factory",
    "make_vector_env": "firebreak_exp.factory",
    "DQNAgent": "firebreak_exp.rl.dqn",
    "ParallelExperienceCollector": "firebreak_exp.rl.trainer",
    "ParallelFuelBreakTrainer": "firebreak_exp.rl.trainer",
    "IterativeFuelBreakTrainer": "firebreak_exp.rl.trainer",
    "Scenario": "firebreak_exp.fire.scenario",
    "load_landscapes": "firebreak_exp.landscape",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'firebreak_exp' has no attribute {name!r}")
