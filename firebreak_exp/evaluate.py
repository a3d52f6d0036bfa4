"""``python -m firebreak_exp.evaluate``: a trained policy against baselines (:mod:`firebreak_exp.commands.evaluate`)."""
from firebreak_exp.commands.cli import launch
from firebreak_exp.commands.evaluate import main

if __name__ == "__main__":
    launch(main)
