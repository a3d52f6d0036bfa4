"""``python -m firebreak_exp.plan``: plan fuel breaks on a whole landscape for GIS (:mod:`firebreak_exp.commands.plan`)."""
from firebreak_exp.commands.cli import launch
from firebreak_exp.commands.plan import main

if __name__ == "__main__":
    launch(main)
