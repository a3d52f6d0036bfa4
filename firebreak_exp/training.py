"""Experience collection and the training loop (one loop for sequential and parallel runs)."""
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from firebreak_exp.agent import DQNAgent, ReplayBuffer
from firebreak_exp.checkpoint import load_checkpoint, save_checkpoint
from firebreak_exp.factory import make_vector_env
from firebreak_exp.vectorization import VectorizedFireEnv

log = logging.getLogger(__name__)


class ParallelExperienceCollector:
    """Steps a VectorizedFireEnv with the agent's epsilon-greedy policy, fills the replay buffer and
    runs learner updates (one per ``train_frequency`` experiences once ``learning_starts`` are stored)."""

    def __init__(self, vec_env: VectorizedFireEnv, agent: DQNAgent, replay: ReplayBuffer,
                 batch_size: int = 64, learning_starts: int = 200, seed: Optional[int] = None):
        self.vec_env, self.agent, self.replay = vec_env, agent, replay
        self.batch_size, self.learning_starts = batch_size, learning_starts
        self.obs, self.infos = vec_env.reset(seed=seed)
        self.total_experiences = 0
        self.total_updates = 0
        self._update_credit = 0.0
        self._step_seconds = 0.0
        self._steps = 0

    def collect_experiences(self, num_steps: int, train_frequency: int = 1) -> dict:
        """Take ``num_steps`` vector steps; returns counts, mean loss, epsilon and throughput."""
        losses, start = [], time.perf_counter()
        for _ in range(num_steps):
            epsilon = self.agent.epsilon(self.total_experiences)
            actions = self.agent.act(self.obs, self.infos["action_mask"], epsilon)
            step_start = time.perf_counter()
            next_obs, rewards, terminations, truncations, infos = self.vec_env.step(actions)
            self._step_seconds += time.perf_counter() - step_start
            self._steps += 1
            final_next = np.where(infos["_final_obs"][:, None, None, None], infos["final_obs"], next_obs)
            self.replay.add(self.obs, self.infos["tile_index"], actions, rewards, final_next, terminations)
            self.obs, self.infos = next_obs, infos
            self.total_experiences += len(actions)
            if len(self.replay) >= self.learning_starts:
                self._update_credit += len(actions) / train_frequency
                while self._update_credit >= 1:
                    losses.append(self.agent.update(self.replay.sample(self.batch_size, self.agent.device)))
                    self._update_credit -= 1
                    self.total_updates += 1
        seconds = time.perf_counter() - start
        experiences = num_steps * self.vec_env.num_envs
        return {"experiences": experiences, "updates": len(losses),
                "loss": float(np.mean(losses)) if losses else float("nan"),
                "epsilon": self.agent.epsilon(self.total_experiences), "seconds": seconds,
                "experiences_per_second": experiences / seconds}

    def get_performance_stats(self) -> dict:
        """Throughput since the collector started: experiences/s and mean seconds per vector step."""
        seconds = max(self._step_seconds, 1e-9)
        return {"experiences_per_second": self.total_experiences / seconds if self._steps else 0.0,
                "average_step_time": self._step_seconds / self._steps if self._steps else 0.0,
                "total_experiences": self.total_experiences, "total_updates": self.total_updates}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class ParallelFuelBreakTrainer:
    """Trains a DQN agent on ``cfg.parallel.num_envs`` environments of ``cfg.parallel.backend``.

    ``tracker`` (a firebreak_exp.tracking.Tracker with a started run) receives metrics and artifacts;
    checkpoints go to ``<run_dir>/checkpoints``.
    """

    def __init__(self, cfg, run_dir: os.PathLike = ".", tracker=None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.tracker = tracker

    def _log(self, metrics: dict, step: int) -> None:
        if self.tracker is not None:
            self.tracker.log_metrics(metrics, step)

    def train(self) -> dict:
        """Run the loop until ``trainer.episodes`` episodes are finished; returns a summary."""
        cfg, trainer = self.cfg, self.cfg.trainer
        seed_everything(int(cfg.seed))
        from firebreak_exp.evaluation import evaluate_policy
        from firebreak_exp.plots import plot_fuel_breaks, plot_training_curves
        with make_vector_env(cfg) as vec_env:
            obs_shape = vec_env.single_observation_space.shape
            agent = DQNAgent(obs_shape, seed=int(cfg.seed), **cfg.agent)
            replay = ReplayBuffer(cfg.agent.buffer_size, obs_shape, seed=int(cfg.seed))
            collector = ParallelExperienceCollector(vec_env, agent, replay, cfg.agent.batch_size,
                                                    trainer.learning_starts, seed=int(cfg.seed))
            history = {"episode": [], "return": [], "burned_area_reduction": [], "loss_step": [], "loss": []}
            best_return, next_checkpoint = -np.inf, trainer.checkpoint_frequency
            progress = _progress_bar(trainer.episodes, trainer.progress)
            episodes_done = 0
            while episodes_done < trainer.episodes:
                stats = collector.collect_experiences(trainer.steps_per_collection, trainer.train_frequency)
                episodes = vec_env.get_episode_stats()
                step = collector.total_experiences
                metrics = {"epsilon": stats["epsilon"], "perf/experiences_per_second": stats["experiences_per_second"],
                           "updates": collector.total_updates}
                if stats["updates"]:
                    metrics["loss"] = stats["loss"]
                    history["loss_step"].append(step)
                    history["loss"].append(stats["loss"])
                if episodes["return"]:
                    metrics["return"] = float(np.mean(episodes["return"]))
                    metrics["burned_area_reduction"] = float(np.mean(episodes["burned_area_reduction"]))
                    metrics["relative_reduction"] = float(np.mean(episodes["relative_reduction"]))
                    for key in ("return", "burned_area_reduction"):
                        history[key].extend(episodes[key])
                    history["episode"].extend(range(episodes_done + 1, episodes_done + 1 + len(episodes["return"])))
                episodes_done = episodes["total_episodes"]
                metrics["episodes"] = episodes_done
                self._log(metrics, step)
                progress.update(episodes_done - progress.n)
                progress.set_postfix(exp_s=f"{stats['experiences_per_second']:.1f}", eps=f"{stats['epsilon']:.2f}")

                recent = float(np.mean(history["return"][-20:])) if history["return"] else -np.inf
                state = _training_state(agent, replay, collector, episodes_done, cfg)
                if episodes_done >= next_checkpoint:
                    save_checkpoint(state, self.checkpoint_dir / f"episode_{episodes_done:06d}.pt")
                    next_checkpoint += trainer.checkpoint_frequency
                    if recent > best_return:
                        best_return = recent
                        save_checkpoint(state, self.checkpoint_dir / "best.pt")
            progress.close()
            final_state = _training_state(agent, replay, collector, episodes_done, cfg)
            save_checkpoint(final_state, self.checkpoint_dir / "last.pt")
            if not (self.checkpoint_dir / "best.pt").exists():
                save_checkpoint(final_state, self.checkpoint_dir / "best.pt")
            performance = collector.get_performance_stats()

        evaluation = evaluate_policy(cfg, agent, episodes=trainer.eval_episodes)
        summary = {"episodes": episodes_done, "experiences": collector.total_experiences,
                   "updates": collector.total_updates,
                   "final_return": float(np.mean(history["return"][-20:])) if history["return"] else 0.0,
                   "perf/experiences_per_second": performance["experiences_per_second"],
                   **{f"heldout/{k}": v for k, v in evaluation["summary"].items()}}
        self._log({k: v for k, v in summary.items() if k != "episodes"}, collector.total_experiences)
        plots = self.run_dir / "plots"
        plot_training_curves(history, plots / "training_curves.png")
        plot_fuel_breaks(evaluation["example"], plots / "fuel_breaks.png")
        if self.tracker is not None:
            self.tracker.log_artifact(plots, "plots")
            self.tracker.log_artifact(self.checkpoint_dir, "checkpoints")
        log.info("trained %d episodes, %d experiences, held-out reduction %.4f", episodes_done,
                 collector.total_experiences, evaluation["summary"]["burned_area_reduction"])
        return summary


class IterativeFuelBreakTrainer(ParallelFuelBreakTrainer):
    """The same trainer on the sequential backend with one environment."""

    def __init__(self, cfg, run_dir: os.PathLike = ".", tracker=None):
        from omegaconf import OmegaConf
        cfg = OmegaConf.merge(cfg, {"parallel": {"backend": "sequential", "num_envs": 1, "max_workers": 1}})
        super().__init__(cfg, run_dir, tracker)


def _training_state(agent, replay, collector, episodes_done, cfg) -> dict:
    return {"agent": agent.state_dict(), "replay": replay.state_dict(),
            "counters": {"episodes": episodes_done, "experiences": collector.total_experiences,
                         "updates": collector.total_updates},
            "rng": {"numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                    "python": random.getstate(), "replay": replay.rng.bit_generator.state},
            "network": {"in_channels": agent.q_network.net[0].in_channels,
                        "channels": cfg.agent.channels, "num_layers": cfg.agent.num_layers}}


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, unit="episode", desc="training", disable=not (enabled and sys.stderr.isatty()))
