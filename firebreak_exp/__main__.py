"""``python -m firebreak_exp``: train (:mod:`firebreak_exp.commands.train`)."""
from firebreak_exp.commands.cli import launch
from firebreak_exp.commands.train import main

if __name__ == "__main__":
    launch(main)
