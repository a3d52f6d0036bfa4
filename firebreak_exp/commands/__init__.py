"""The command layer: train, evaluate and benchmark, sharing one error handler and one tracked run."""
