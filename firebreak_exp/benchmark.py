"""``python -m firebreak_exp.benchmark``: this machine's speeds and recommended settings
(:mod:`firebreak_exp.commands.benchmark`)."""
from firebreak_exp.commands.benchmark import main
from firebreak_exp.commands.cli import launch

if __name__ == "__main__":
    launch(main)
