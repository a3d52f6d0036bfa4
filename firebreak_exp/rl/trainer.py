"""Experience collection and the training loop (one loop for sequential and parallel runs)."""
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from firebreak_exp.interrupt import Interrupted, graceful_stop
from firebreak_exp.planning.evaluation import HeldoutEvaluation
from firebreak_exp.plots import plot_fuel_breaks, plot_training_curves
from firebreak_exp.rl.checkpoint import CheckpointError, load_checkpoint, replay_file, save_checkpoint
from firebreak_exp.rl.dqn import DQNAgent
from firebreak_exp.rl.memories import fill_replay, memory_stats
from firebreak_exp.rl.parts import TrainingParts, build_training
from firebreak_exp.rl.replay import NStepReturns, ReplayBuffer
from firebreak_exp.vector.env import VectorizedFireEnv

log = logging.getLogger(__name__)


class ParallelExperienceCollector:
    """Steps a VectorizedFireEnv with the agent's epsilon-greedy policy, fills the replay buffer and
    runs learner updates (one per ``train_frequency`` experiences once ``learning_starts`` are stored)."""

    def __init__(self, vec_env: VectorizedFireEnv, agent: DQNAgent, replay: ReplayBuffer,
                 batch_size: int = 64, learning_starts: int = 200, seed: Optional[int] = None):
        self.vec_env, self.agent, self.replay = vec_env, agent, replay
        self.n_step = NStepReturns(vec_env.num_envs, agent.n_step, agent.gamma)
        self.batch_size, self.learning_starts = batch_size, learning_starts
        self.obs, self.infos = vec_env.reset(seed=seed)
        self.total_experiences = 0
        self.total_updates = 0
        self.update_credit = 0.0
        self._seconds = 0.0   # wall clock inside collect_experiences: stepping, acting and learning
        self._steps = 0

    def collect_experiences(self, num_steps: int, train_frequency: int = 1,
                            stop: Optional[Callable[[], bool]] = None) -> dict:
        """Take ``num_steps`` vector steps (fewer when ``stop()`` turns true after one: ``steps`` says how
        many); returns counts, the losses and their mean, epsilon and throughput.

        The learner updates owed for the experiences stored so far run while the environments step
        (between ``step_async`` and ``wait_for_results``): on the process and Dask backends the fires
        burn on other cores meanwhile. The order of updates and steps is the same on every backend.
        """
        losses, start, steps = [], time.perf_counter(), 0
        while steps < num_steps and not (steps and stop is not None and stop()):
            steps += 1
            epsilon = self.agent.epsilon(self.total_experiences)
            actions = self.agent.act(self.obs, self.infos["action_mask"], epsilon)
            self.vec_env.step_async(actions)
            while self.update_credit >= 1:
                losses.append(self.agent.update(self.replay.sample(self.batch_size, self.agent.device)))
                self.update_credit -= 1
                self.total_updates += 1
            next_obs, rewards, terminations, truncations, infos = self.vec_env.wait_for_results()
            self._steps += 1
            final_next = np.where(infos["_final_obs"][:, None, None, None], infos["final_obs"], next_obs)
            self.replay.add(*self.n_step.push(self.obs, self.infos["tile_index"], actions, rewards, final_next,
                                              terminations))
            self.obs, self.infos = next_obs, infos
            self.total_experiences += len(actions)
            if len(self.replay) >= self.learning_starts:
                self.update_credit += len(actions) / train_frequency
        seconds = time.perf_counter() - start
        self._seconds += seconds
        experiences = steps * self.vec_env.num_envs
        return {"steps": steps, "experiences": experiences, "updates": len(losses), "losses": losses,
                "loss": float(np.mean(losses)) if losses else float("nan"),
                "epsilon": self.agent.epsilon(self.total_experiences), "seconds": seconds,
                "experiences_per_second": experiences / seconds}

    def get_performance_stats(self) -> dict:
        """Throughput since the collector started, learning included: experiences/s and mean seconds per
        vector step (acting, stepping and the learner updates run meanwhile)."""
        seconds = max(self._seconds, 1e-9)
        return {"experiences_per_second": self.total_experiences / seconds if self._steps else 0.0,
                "average_step_time": self._seconds / self._steps if self._steps else 0.0,
                "total_experiences": self.total_experiences, "total_updates": self.total_updates}

    def state_dict(self) -> dict:
        """Counters and every environment's mid-episode state, for checkpoints."""
        return {"total_experiences": self.total_experiences, "total_updates": self.total_updates,
                "update_credit": self.update_credit, "env_states": self.vec_env.get_env_states(),
                "n_step": self.n_step.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.total_experiences = int(state["total_experiences"])
        self.total_updates = int(state["total_updates"])
        self.update_credit = float(state["update_credit"])
        if "n_step" in state:
            self.n_step.load_state_dict(state["n_step"])
        self.obs, self.infos = self.vec_env.set_env_states(state["env_states"])


class ParallelFuelBreakTrainer:
    """Trains a DQN agent on the environments of a vector env (``cfg.trainer`` sets the loop).

    ``parts`` (:class:`~firebreak_exp.rl.parts.TrainingParts`: the vector env, agent, replay, end-of-run
    evaluation and expert memories) are what :func:`~firebreak_exp.rl.parts.build_training` builds from
    ``cfg``, as the train command does; without them ``train()`` builds them so. The trainer closes the
    vector env when done.
    ``tracker`` (a firebreak_exp.commands.tracking.Tracker with a started run) receives metrics and artifacts;
    checkpoints go to ``<run_dir>/checkpoints`` and to the run's ``checkpoints/`` artifacts as they are written. With ``resume=True`` training continues from the
    newest readable checkpoint there, and metric steps already in the run are not logged again.
    """

    def __init__(self, cfg, run_dir: os.PathLike = ".", tracker=None, resume: bool = False,
                 parts: Optional[TrainingParts] = None):
        self.cfg = cfg
        self.parts = parts
        self.run_dir = Path(run_dir)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.tracker = tracker
        self.resume = resume
        self.logged_until = -1  # metric steps up to this one are already in the MLflow run
        self.episodes_done = 0

    def _log(self, metrics: dict, step: int) -> None:
        if self.tracker is not None and step > self.logged_until:
            self.tracker.log_metrics(metrics, step)

    def train(self) -> dict:
        """Run the loop until ``trainer.episodes`` episodes are finished; returns a summary.

        SIGINT/SIGTERM (firebreak_exp.interrupt) stop it after the vector step in flight with ``last.pt``
        written, raising Interrupted that names the episode, the checkpoint and this run folder."""
        with graceful_stop() as stop:
            try:
                return self._train(stop)
            except Interrupted as interrupted:
                interrupted.episode, interrupted.run_dir = self.episodes_done, self.run_dir
                interrupted.checkpoint = newest_readable_checkpoint(self.checkpoint_dir)
                raise

    def _train(self, stop) -> dict:
        cfg, trainer = self.cfg, self.cfg.trainer
        parts = self.parts if self.parts is not None else build_training(cfg, resume=self.resume)
        vec_env, agent, replay = parts.vec_env, parts.agent, parts.replay
        with vec_env:
            collector = ParallelExperienceCollector(vec_env, agent, replay, agent.batch_size,
                                                    trainer.learning_starts, seed=int(cfg.seed))
            loop = {"episodes": 0, "best_return": -np.inf, "next_checkpoint": trainer.checkpoint_frequency,
                    "history": {"episode": [], "return": [], "burned_area_reduction": [], "loss_step": [], "loss": []}}
            if self.resume:
                loop = self._restore(agent, replay, collector)
            elif parts.expert_memories is not None:
                self._pretrain(agent, replay, parts.expert_memories)
            self.episodes_done = loop["episodes"]
            progress = _progress_bar(trainer.episodes, trainer.progress, initial=loop["episodes"])
            with stop.deferred():   # a signal is acted on here, after the vector step in flight
                while loop["episodes"] < trainer.episodes:
                    if stop.requested:
                        progress.close()
                        save_checkpoint(self._state(loop, agent, replay, collector), self.checkpoint_dir / "last.pt")
                        raise stop.interrupted()
                    self._collect_and_log(loop, agent, replay, collector, progress, stop)
            progress.close()
            final_state = self._state(loop, agent, replay, collector)
            self._save(final_state, "last.pt")
            if not (self.checkpoint_dir / "best.pt").exists():
                self._save(final_state, "best.pt")
            performance = collector.get_performance_stats()
        return self._finish(agent, parts.evaluation, collector, loop, performance)

    def _collect_and_log(self, loop, agent, replay, collector, progress, stop) -> None:
        """One collection of ``trainer.steps_per_collection`` vector steps, its metrics, and the periodic
        checkpoint when one is due. A stop signal ends the collection after the vector step in flight; what
        it collected so far waits in ``loop["partial_collection"]`` (and in checkpoints) for the rest, so a
        resumed run logs the same metrics at the same steps as an uninterrupted one."""
        trainer, history, vec_env = self.cfg.trainer, loop["history"], collector.vec_env
        partial = loop.get("partial_collection") or {"steps": 0, "losses": [], "episodes": {}}
        wanted = trainer.steps_per_collection - partial["steps"]
        stats = collector.collect_experiences(wanted, trainer.train_frequency, stop=lambda: stop.requested)
        episodes = vec_env.get_episode_stats()
        episodes = {key: list(partial["episodes"].get(key, [])) + list(value) for key, value in episodes.items()
                    if key != "total_episodes"}
        losses = list(partial["losses"]) + stats["losses"]
        if stats["steps"] < wanted:
            loop["partial_collection"] = {"steps": partial["steps"] + stats["steps"], "losses": losses,
                                          "episodes": episodes}
            return
        loop["partial_collection"] = None
        finished = len(episodes["return"])
        step = collector.total_experiences
        metrics = {"epsilon": stats["epsilon"], "updates": collector.total_updates,
                   "perf/experiences_per_second": stats["experiences_per_second"]}
        if losses:
            metrics["loss"] = float(np.mean(losses))
            history["loss_step"].append(step)
            history["loss"].append(metrics["loss"])
        if finished:
            metrics["return"] = float(np.mean(episodes["return"]))
            metrics["burned_area_reduction"] = float(np.mean(episodes["burned_area_reduction"]))
            metrics["relative_reduction"] = float(np.mean(episodes["relative_reduction"]))
            for key in ("return", "burned_area_reduction"):
                history[key].extend(episodes[key])
            history["episode"].extend(range(loop["episodes"] + 1, loop["episodes"] + 1 + finished))
        loop["episodes"] += finished
        self.episodes_done = loop["episodes"]
        metrics["episodes"] = loop["episodes"]
        self._log(metrics, step)
        progress.update(finished)
        progress.set_postfix(exp_s=f"{stats['experiences_per_second']:.1f}", eps=f"{stats['epsilon']:.2f}")
        if loop["episodes"] >= loop["next_checkpoint"]:
            self._periodic_checkpoint(loop, agent, replay, collector)

    def _pretrain(self, agent, replay, memories: dict) -> None:
        """Pre-fill the buffer with the expert ``memories`` and run ``pretrain_steps`` updates on them."""
        fill_replay(replay, memories, n_step=agent.n_step, gamma=agent.gamma)
        losses = [agent.update(replay.sample(agent.batch_size, agent.device))
                  for _ in range(self.cfg.trainer.pretrain_steps)]
        self._log({**memory_stats(memories), **({"pretrain_loss": float(np.mean(losses[-50:]))} if losses else {})}, 0)
        log.info("pre-trained on %d expert transitions with %d updates", len(replay), len(losses))

    # -- checkpoints ---------------------------------------------------------------------------
    def _state(self, loop, agent, replay, collector) -> dict:
        return {"agent": agent.state_dict(), "replay": replay.state_dict(), "collector": collector.state_dict(),
                "loop": loop, "counters": {"episodes": loop["episodes"], "experiences": collector.total_experiences,
                                           "updates": collector.total_updates},
                "rng": {"numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                        "python": random.getstate(), "replay": replay.rng.bit_generator.state},
                "network": network_shape(agent)}

    def _periodic_checkpoint(self, loop, agent, replay, collector) -> None:
        """Every ``checkpoint_frequency`` episodes: ``episode_N.pt``, ``last.pt``, and ``best.pt`` if better."""
        loop["next_checkpoint"] += self.cfg.trainer.checkpoint_frequency
        recent = float(np.mean(loop["history"]["return"][-20:])) if loop["history"]["return"] else -np.inf
        improved = recent > loop["best_return"]
        if improved:
            loop["best_return"] = recent
        state = self._state(loop, agent, replay, collector)
        self._save(state, f"episode_{loop['episodes']:06d}.pt")
        if improved:
            self._save(state, "best.pt")
        self._save(state, "last.pt")

    def _save(self, state: dict, name: str) -> None:
        """Write checkpoint ``name`` and log it with its replay buffer to the MLflow run at once (artifacts
        ``checkpoints/``), so that a run killed later has its checkpoints in MLflow."""
        path = save_checkpoint(state, self.checkpoint_dir / name)
        if self.tracker is not None:
            for file in (replay_file(path), path):   # the replay first: a checkpoint in MLflow has its replay
                self.tracker.log_artifact(file, "checkpoints")

    def _restore(self, agent, replay, collector) -> dict:
        """Load the newest readable checkpoint; a truncated one is reported and the previous one used."""
        path = newest_readable_checkpoint(self.checkpoint_dir, warn=True)
        if path is None:
            raise CheckpointError(f"no readable checkpoint in {self.checkpoint_dir} to resume from")
        state = load_checkpoint(path)
        check_network_shape(state, agent, path)
        agent.load_state_dict(state["agent"])
        replay.load_state_dict(state["replay"])
        replay.rng.bit_generator.state = state["rng"]["replay"]
        numpy_state = state["rng"]["numpy"]
        np.random.set_state((numpy_state[0], np.asarray(numpy_state[1]), *numpy_state[2:]))
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(_as_tuples(state["rng"]["python"]))
        collector.load_state_dict(state["collector"])
        if self.tracker is not None:
            self.logged_until = self.tracker.last_metric_step("episodes")
        log.info("resumed from %s at episode %d (%d experiences)", path, state["loop"]["episodes"],
                 collector.total_experiences)
        loop = state["loop"]
        loop["best_return"] = float(loop["best_return"])
        return loop

    # -- end of training -----------------------------------------------------------------------
    def _finish(self, agent, evaluation: HeldoutEvaluation, collector, loop, performance) -> dict:
        history = loop["history"]
        evaluation = evaluation(agent)
        summary = {"episodes": loop["episodes"], "experiences": collector.total_experiences,
                   "updates": collector.total_updates,
                   "final_return": float(np.mean(history["return"][-20:])) if history["return"] else 0.0,
                   "perf/experiences_per_second": performance["experiences_per_second"],
                   **{("perf/heldout/" if "seconds" in k else "heldout/") + k: v
                      for k, v in evaluation["summary"].items()}}
        self._log({k: v for k, v in summary.items() if k != "episodes"}, collector.total_experiences + 1)
        plots = self.run_dir / "plots"
        plot_training_curves(history, plots / "training_curves.png")
        plot_fuel_breaks(evaluation["example"], plots / "fuel_breaks.png")
        if self.tracker is not None:
            self.tracker.log_artifact(plots, "plots")
        log.info("trained %d episodes, %d experiences, held-out reduction %.4f", loop["episodes"],
                 collector.total_experiences, evaluation["summary"]["burned_area_reduction"])
        return summary


class IterativeFuelBreakTrainer(ParallelFuelBreakTrainer):
    """The same trainer on the sequential backend with one environment."""

    def __init__(self, cfg, run_dir: os.PathLike = ".", tracker=None, resume: bool = False):
        from omegaconf import OmegaConf
        cfg = OmegaConf.merge(cfg, {"parallel": {"backend": "sequential", "num_envs": 1, "max_workers": 1}})
        super().__init__(cfg, run_dir, tracker, resume)


def newest_readable_checkpoint(checkpoint_dir: os.PathLike, warn: bool = False) -> Optional[Path]:
    """``last.pt`` of ``checkpoint_dir`` if it loads, else the newest ``episode_*.pt`` that does; None when
    none does. ``warn`` logs each one skipped."""
    checkpoint_dir = Path(checkpoint_dir)
    for path in [checkpoint_dir / "last.pt"] + sorted(checkpoint_dir.glob("episode_*.pt"), reverse=True):
        try:
            load_checkpoint(path)
            return path
        except CheckpointError as error:
            if warn and path.exists():
                log.warning("skipping checkpoint: %s", error)
    return None


def network_shape(agent: DQNAgent) -> dict:
    """What a checkpoint's Q-network weights must fit: input channels, width, depth."""
    network = agent.q_network
    return {"in_channels": network.in_channels, "channels": network.channels, "num_layers": network.num_layers}


def check_network_shape(state: dict, agent: DQNAgent, path: os.PathLike) -> None:
    """CheckpointError if the checkpoint's Q-network differs in shape from ``agent``'s."""
    expected = network_shape(agent)
    found = {k: int(v) for k, v in state["network"].items()}
    if found != expected:
        raise CheckpointError(f"checkpoint {path} holds a Q-network {found}, but the config builds {expected}")


def _as_tuples(value):
    """Lists back to tuples (Python's random state is nested tuples)."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _progress_bar(total: int, enabled: bool, initial: int = 0):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, unit="episode", desc="training",
                disable=not (enabled and sys.stderr.isatty()))
