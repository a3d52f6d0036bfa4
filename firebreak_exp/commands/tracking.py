"""MLflow tracking: one run per job, a parent run per Hydra multirun.

``import mlflow`` costs about 2 s, so it happens here, in the main process only,
never in modules that environment workers import.

``tracking.uri`` may be a SQLite file (the default, embedded store) or the
``http(s)://`` address of an ``mlflow server``; a server is probed with a short
timeout before anything is created, so an unreachable one fails the run at once
with one line naming the URI (not after MLflow's minutes of retries).
"""
import atexit
import os
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List, Mapping, Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from firebreak_exp.commands.errors import ParentRunError, exit_with_error, one_line
from firebreak_exp.commands.store_lock import StoreLockedError, store_lock
from firebreak_exp.interrupt import Interrupted, received_stop_signal, stop_sweep_on_signals

PARENT_RUN_FILE = ".mlflow_parent_run_id"
#: In a multirun's sweep folder: the keys its overrides sweep over, one a line (run names show their values).
SWEEP_KEYS_FILE = ".sweep_keys"
MAX_PARAM_LENGTH = 6000
MAX_RUN_NAME_LENGTH = 250
#: MLflow 3 opens an experiment on its runs table (not the GenAI overview) when it has this kind.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
PROBE_TIMEOUT_SECONDS = 5.0


class TrackingUnavailableError(RuntimeError):
    """The MLflow tracking server of ``tracking.uri`` does not answer."""


def check_tracking_server(uri: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
    """Raise TrackingUnavailableError unless the server at ``uri`` answers HTTP within ``timeout`` seconds.

    Any HTTP answer counts (a proxy asking for credentials is reachable; MLflow reports auth errors itself);
    only no connection, a timeout or a non-HTTP peer fail. Non-HTTP URIs are not probed.
    """
    if not uri.startswith(("http://", "https://")):
        return
    import requests  # a dependency of mlflow; honours the same proxy settings as MLflow's client
    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as error:
        reason = type(error).__name__
        if isinstance(error, requests.ConnectionError) and not isinstance(error, requests.Timeout):
            reason = "connection refused or host unreachable"
        elif isinstance(error, requests.Timeout):
            reason = f"no answer within {timeout:g} s"
        raise TrackingUnavailableError(
            f"MLflow tracking server {uri} (tracking.uri) is unreachable: {reason}; start it "
            f"(mlflow server ... --host 127.0.0.1 --port PORT) or choose another tracking.uri") from error


def flatten(config: Mapping, prefix: str = "") -> dict:
    """Nested mapping -> {"a.b.c": value} with lists and None turned into strings."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def git_commit(path: Path = Path(__file__).resolve().parent) -> str:
    """The commit of the checkout holding this package, or 'unknown'."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def default_artifact_location(uri: str) -> Optional[str]:
    """For a SQLite store, artifacts live beside it in ``mlartifacts/`` (absolute file URI)."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).resolve().parent.joinpath("mlartifacts").as_uri()
    return None


class Tracker:
    """One MLflow run: params, tags, metrics over steps and artifacts, through ``MlflowClient``; the
    ``tracking`` group's target. ``artifact_location`` (None: ``mlartifacts/`` beside a SQLite store) applies
    when the experiment is created."""

    def __init__(self, uri: str, experiment: str, artifact_location: Optional[str]):
        check_tracking_server(uri)
        import mlflow
        from mlflow.tracking import MlflowClient
        self._mlflow = mlflow
        self.uri = uri
        with store_lock(uri):   # a new SQLite store is built when first opened: one process at a time
            self.client = MlflowClient(tracking_uri=uri)
            self._open_experiment(experiment, artifact_location)
        self.run_id: Optional[str] = None

    def _open_experiment(self, experiment: str, artifact_location: Optional[str]) -> None:
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            location = artifact_location or default_artifact_location(self.uri)
            try:
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location,
                                                                   tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            except self._mlflow.exceptions.MlflowException:  # created meanwhile by a server's other client
                found = self.client.get_experiment_by_name(experiment)
                if found is None:
                    raise
        if found is not None:
            self.experiment_id = found.experiment_id
            if EXPERIMENT_KIND_TAG not in found.tags:   # an experiment created without it
                self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)

    def start(self, run_name: str, tags: Mapping[str, str], run_id: Optional[str] = None) -> str:
        """Start a new run (or reopen ``run_id``) and return its id."""
        if run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=run_name, tags=dict(tags))
            self.run_id = run.info.run_id
        else:
            try:
                self.client.get_run(run_id)
            except self._mlflow.exceptions.MlflowException as error:
                raise ValueError(f"MLflow run {run_id} is not in {self.uri} (tracking.uri); continue it with the "
                                 f"tracking store it was logged to") from error
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
        return self.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param
        items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric
        import time
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=items)

    def last_metric_step(self, key: str) -> int:
        """The largest step logged for metric ``key`` in this run (-1 when none)."""
        history = self.client.get_metric_history(self.run_id, key)
        return max((m.step for m in history), default=-1)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_artifact(self, path: os.PathLike, artifact_path: Optional[str] = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        elif path.exists():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)


def job_tags(extra: Optional[Mapping[str, str]] = None) -> dict:
    """Tags of a Hydra job: overrides, git commit, sweep id and parent run when in a multirun."""
    tags = {"git_commit": git_commit(), "mlflow.source.git.commit": git_commit()}
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        tags["overrides"] = " ".join(hydra_cfg.overrides.task) or "(none)"
        if hydra_cfg.mode.name == "MULTIRUN":
            sweep_dir = Path(hydra_cfg.sweep.dir)
            tags["sweep_id"] = str(sweep_dir.resolve())
            tags["job_num"] = str(hydra_cfg.job.num)
            parent_file = sweep_dir / PARENT_RUN_FILE
            if parent_file.exists():
                tags["mlflow.parentRunId"] = parent_file.read_text().strip()
    tags.update(extra or {})
    return tags


def _parsed(overrides: Sequence[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    return OverridesParser.create().parse_overrides(list(overrides))


def override_keys(overrides: Sequence[str]) -> List[str]:
    """The key of each command-line override (``seed=0,1`` -> ``seed``, ``+a.b=1`` -> ``+a.b``)."""
    return [o.get_key_element() for o in _parsed(overrides)]


def sweep_keys(overrides: Sequence[str]) -> List[str]:
    """The keys that a multirun's ``overrides`` sweep over (``seed=0,1 experiment=smoke`` -> ``seed``)."""
    return [o.get_key_element() for o in _parsed(overrides) if o.is_sweep_override()]


def run_name(prefix: str) -> str:
    """What differs in this job: in a multirun its values of the swept keys (``parallel.num_envs=4``), else
    its overrides (``experiment=smoke``) but ``tracking.*`` (where the run is logged); ``prefix`` (with the
    job number in a multirun) when none."""
    if not HydraConfig.initialized():
        return prefix
    hydra_cfg = HydraConfig.get()
    keyed = [(o, key) for o, key in zip(hydra_cfg.overrides.task, override_keys(hydra_cfg.overrides.task))
             if key.lstrip("+~").split(".")[0] != "tracking"]
    if hydra_cfg.mode.name == "MULTIRUN":
        prefix = f"{prefix}-{hydra_cfg.job.num}"
        keys_file = Path(hydra_cfg.sweep.dir) / SWEEP_KEYS_FILE
        swept = set(keys_file.read_text().split()) if keys_file.exists() else set()
        keyed = [(o, key) for o, key in keyed if key in swept] or keyed
    return " ".join(o for o, _ in keyed)[:MAX_RUN_NAME_LENGTH] or prefix


@contextmanager
def tracked_run(tracking: DictConfig, name: str, tags: Mapping[str, str],
                run_id: Optional[str] = None) -> Iterator[Tracker]:
    """One MLflow run of a job (``run_id``: reopen that run): named :func:`run_name` of ``name``, tagged
    :func:`job_tags` plus ``tags``; it ends FINISHED, or KILLED / FAILED when the body raises (KILLED by a
    signal: tagged ``interrupted_by`` with the signal's name)."""
    tracker = instantiate(tracking)
    tracker.start(run_name(name), job_tags(tags), run_id=run_id)
    try:
        yield tracker
    except Interrupted as stop:
        tracker.set_tags({"interrupted_by": stop.signal_name})
        tracker.finish("KILLED")
        raise
    except BaseException as error:
        tracker.finish("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    tracker.finish("FINISHED")


class MultirunParentCallback(Callback):
    """Create the MLflow store, the experiment and one parent run before a multirun's jobs start; close it at the end.

    Jobs find the parent's id in ``<sweep dir>/.mlflow_parent_run_id`` and tag themselves as its children
    (named after their values of the swept keys, listed in ``<sweep dir>/.sweep_keys``),
    so parallel launchers (joblib, submitit) never race to create the SQLite store or the experiment.
    A sweep that dies before its end leaves its parent FAILED, not RUNNING; one stopped by SIGINT or SIGTERM
    (the job in progress checkpoints, :mod:`~firebreak_exp.interrupt`) leaves it KILLED, tagged
    ``interrupted_by`` with the signal's name, like the job's own run.
    The callback travels to the launchers' job processes by pickle, without its live MLflow client.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Create the parent run; if that fails the sweep stops here with one line (Hydra would only warn
        and run the jobs without a parent)."""
        self._replaced_handlers = stop_sweep_on_signals()
        HydraConfig.instance().set_config(config)
        tracking = config.tracking
        sweep_dir = Path(config.hydra.sweep.dir)
        overrides = " ".join(config.hydra.overrides.task)
        try:
            tracker = instantiate(tracking)
            with store_lock(tracking.uri):
                tracker.start("sweep", {"sweep_id": str(sweep_dir.resolve()), "overrides": overrides,
                                        "git_commit": git_commit(), "run_kind": "sweep"})
        except Exception as error:
            if isinstance(error, InstantiationException) and error.__cause__ is not None:
                error = error.__cause__   # hydra's wrapper around the tracker's own error
            if isinstance(error, (TrackingUnavailableError, StoreLockedError)):
                exit_with_error(error)
            exit_with_error(ParentRunError(f"the sweep's parent run could not be created in {tracking.uri} "
                                           f"(tracking.uri), so no job was started: {one_line(error)}"))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / SWEEP_KEYS_FILE).write_text("\n".join(sweep_keys(config.hydra.overrides.task)))
        (sweep_dir / PARENT_RUN_FILE).write_text(tracker.run_id)
        self._tracker = tracker
        atexit.register(self._finish, "FAILED")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish("FINISHED")
        for signum, handler in getattr(self, "_replaced_handlers", {}).items():
            signal.signal(signum, handler)

    def _finish(self, status: str) -> None:
        tracker = getattr(self, "_tracker", None)
        if tracker is not None:
            self._tracker = None
            atexit.unregister(self._finish)
            try:
                stopped_by = received_stop_signal()
                if status == "FAILED" and stopped_by is not None:
                    tracker.set_tags({"interrupted_by": signal.Signals(stopped_by).name})
                    status = "KILLED"
                tracker.finish(status)
            except Exception:  # at exit, after a failure: never mask it
                if status == "FINISHED":
                    raise

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_tracker", "_replaced_handlers")}


def config_params(cfg: DictConfig) -> dict:
    """The composed config (without ``hydra``), resolved and flattened, as MLflow params."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    return flatten(container)
