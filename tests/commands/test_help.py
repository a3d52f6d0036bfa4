"""``--help`` of the four commands: the app, what it does, its config groups with their options, examples."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAINING_GROUPS = ["landscape", "scenario", "simulator", "env", "parallel", "agent", "replay", "trainer", "planners",
                   "tracking", "experiment"]


def help_text(module: str, *overrides: str) -> str:
    result = subprocess.run([sys.executable, "-m", module, "--help", *overrides], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def listed_groups(text: str) -> dict:
    """{group: [options as listed, the chosen one starred]} from the help's config-groups section."""
    section = text.split("== Config groups")[1].split("== Examples")[0]
    return {m[1]: m[2].split(", ") for m in re.finditer(r"^  (\w+):\s+(.+)$", section, re.M)}


def options(group: str) -> list:
    return sorted(path.stem for path in (ROOT / "conf" / group).glob("*.yaml"))


@pytest.mark.parametrize("module, groups, chosen", [
    ("firebreak_exp", TRAINING_GROUPS, {"parallel": "process", "simulator": "travel_time"}),
    ("firebreak_exp.evaluate", TRAINING_GROUPS, {"parallel": "sequential", "simulator": "pyretechnics"}),
    ("firebreak_exp.benchmark", ["benchmark"] + TRAINING_GROUPS, {"benchmark": "default", "parallel": "sequential"}),
    ("firebreak_exp.plan", TRAINING_GROUPS, {"parallel": "sequential", "simulator": "travel_time"}),
])
def test_help_names_the_app_and_lists_its_groups_and_examples(module, groups, chosen):
    text = help_text(module)
    assert text.startswith(f"{module}: ") and "powered by Hydra" not in text
    assert f"Usage: python -m {module}" in text
    listed = listed_groups(text)
    assert list(listed) == groups   # the benchmark group only where the command uses it
    for group, shown in listed.items():
        assert [o.rstrip("*") for o in shown] == options(group), group
    for group, option in chosen.items():
        assert f"{option}*" in listed[group] and sum(o.endswith("*") for o in listed[group]) == 1
    examples = text.split("== Examples ==")[1].split("== Config ==")[0]
    assert len(re.findall(rf"^  python -m {re.escape(module)}\b", examples, re.M)) >= 3
    assert "\nseed: 0\n" in text   # the composed config


def test_help_stars_the_options_chosen_on_the_command_line():
    listed = listed_groups(help_text("firebreak_exp", "parallel=joblib", "experiment=smoke"))
    assert "joblib*" in listed["parallel"] and "smoke*" in listed["experiment"]
    assert "process" in listed["parallel"]
