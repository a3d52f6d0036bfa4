"""Mistakes in a command line that Hydra finds while it composes the config: a value of the wrong type for
its key (``seed=nan``), an unknown key (``trainer.total_episodes=5``), an unknown option of a config group
(``parallel=gpu``), an override it cannot parse (``seed=[``).

Hydra reports these from its ``run_and_report`` (which wraps composing the config and running the job) in
several lines, with exit status 1. :func:`report_composition_errors` hands them to the shared error handler
instead (:func:`~firebreak_exp.commands.errors.exit_with_error`): one line naming the override and what was
expected, exit status 2, as for every other bad input. ``HYDRA_FULL_ERROR=1`` still shows Hydra's own report
with the full stack trace.
"""
import difflib
import functools
import os
import re
from typing import Callable, Optional

from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, ListConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError
from omegaconf.nodes import BooleanNode, BytesNode, EnumNode, FloatNode, IntegerNode, PathNode, StringNode

from firebreak_exp.commands.errors import exit_with_error

#: What a node of each type accepts, as the one-line error says it.
EXPECTED = {IntegerNode: "an integer", FloatNode: "a number", BooleanNode: "true or false",
            StringNode: "a string", PathNode: "a path", BytesNode: "bytes",
            DictConfig: "a mapping ({key: value, ...})", ListConfig: "a list ([a, b, ...])"}
#: Hydra's messages that quote the override they are about.
OVERRIDE_IN_MESSAGE = (re.compile(r"^Error merging override (.+)$"),
                       re.compile(r"^To append to your config use \+(.+)$", re.MULTILINE))
COMPOSITION_ERRORS = (ConfigCompositionException, OverrideParseException)


class CommandLineError(ValueError):
    """An override that Hydra could not compose into the config (bad input: exit status 2)."""


def first_line(text: str) -> str:
    return (str(text).strip().splitlines() or [""])[0].strip()


def _override_of(error: BaseException) -> Optional[str]:
    for pattern in OVERRIDE_IN_MESSAGE:
        found = pattern.search(str(error).strip())
        if found:
            return found.group(1).strip()
    return None


def _expected(node) -> Optional[str]:
    if isinstance(node, EnumNode):
        return "one of " + ", ".join(member.name for member in node.enum_type)
    return next((text for kind, text in EXPECTED.items() if isinstance(node, kind)), None)


def _suggestions(key: str, keys: list) -> list:
    """Up to 3 of ``keys`` the user may have meant by ``key``: first those whose words (``_``-separated) all
    appear in ``key`` or contain all of its words (``total_episodes``: ``episodes``), then the closest by
    spelling."""
    words = set(key.split("_"))
    shared = [k for k in keys if set(k.split("_")) <= words or words <= set(k.split("_"))]
    return list(dict.fromkeys(shared + difflib.get_close_matches(key, keys, n=3, cutoff=0.5)))[:3]


def _unknown_key(override: str, cause: OmegaConfBaseException) -> str:
    full_key = str(getattr(cause, "full_key", None) or override.split("=")[0])
    parent, key = full_key.rpartition(".")[0], str(getattr(cause, "key", None) or full_key.rpartition(".")[2])
    node = getattr(cause, "parent_node", None)
    keys = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
    where = f"{parent}." if parent else ""
    close = _suggestions(key, keys)
    if close:
        return f"{override}: unknown key {full_key}; did you mean {' or '.join(where + k for k in close)}?"
    known = f"; {parent or 'the config'} has the keys {', '.join(keys)}" if keys else ""
    return f"{override}: unknown key {full_key}{known}"


def _wrong_value(override: str, cause: ValidationError) -> str:
    expected = _expected(getattr(cause, "child_node", None))
    if expected is None:
        return f"{override}: {first_line(getattr(cause, 'msg', cause))}"
    if getattr(cause, "value", 0) is None:
        return f"{override}: expected {expected}, not null"
    return f"{override}: expected {expected}"


def describe(error: BaseException) -> str:
    """One line naming the override of a Hydra composition error and what was expected."""
    if isinstance(error, OverrideParseException):
        message = str(getattr(error, "message", error))
        guide = re.search(r"https?://\S+", message)
        return (f"{error.override}: cannot parse this override ({first_line(message)})"
                + (f"; see {guide.group(0)}" if guide else ""))
    if isinstance(error, MissingConfigException) and error.options is not None and error.missing_cfg_file:
        group, _, option = error.missing_cfg_file.rpartition("/")
        return (f"{group}={option}: config group {group} has no option {option!r}; expected one of "
                f"{', '.join(error.options)}")
    override, cause = _override_of(error), error.__cause__
    if override is not None and isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
        return _unknown_key(override, cause)
    if override is not None and isinstance(cause, ValidationError):
        return _wrong_value(override, cause)
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    lines = lines[:lines.index("Config search path:")] if "Config search path:" in lines else lines
    if isinstance(cause, OmegaConfBaseException):
        lines.append(first_line(getattr(cause, "msg", cause)))
    return "; ".join(lines) or type(error).__name__


def _report_composing(func: Callable) -> Callable:
    def composing_reported():
        try:
            return func()
        except COMPOSITION_ERRORS as error:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            exit_with_error(CommandLineError(describe(error)))
    return composing_reported


def report_composition_errors() -> None:
    """Route the composition errors of every ``@hydra.main`` command in this process to the shared error
    handler: wraps ``hydra._internal.utils.run_and_report`` (hydra-core 1.3, pinned in pyproject.toml),
    through which Hydra composes the config, so that they reach it before Hydra's own report."""
    from hydra._internal import utils
    hydra_run_and_report = utils.run_and_report
    if getattr(hydra_run_and_report, "reports_composition_errors", False):
        return

    @functools.wraps(hydra_run_and_report)
    def run_and_report(func):
        return hydra_run_and_report(_report_composing(func))

    run_and_report.reports_composition_errors = True
    utils.run_and_report = run_and_report
