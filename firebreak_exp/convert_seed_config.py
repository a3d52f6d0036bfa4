"""``python -m firebreak_exp.convert_seed_config FILE``: a seed JSON config as overrides
(:mod:`firebreak_exp.commands.seed_config`)."""
import sys

from firebreak_exp.commands.seed_config import main

if __name__ == "__main__":
    sys.exit(main())
