"""What a training run is made of, built once from a composed config and handed to the trainer: the vector
env, the agent, the replay buffer, the end-of-run evaluation on held-out tiles and the expert memories."""
import random
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from firebreak_exp.factory import make_agent, make_replay, make_vector_env
from firebreak_exp.planning.evaluation import HeldoutEvaluation
from firebreak_exp.rl.dqn import DQNAgent
from firebreak_exp.rl.memories import load_or_generate_expert_memories
from firebreak_exp.rl.replay import ReplayBuffer
from firebreak_exp.vector.env import VectorizedFireEnv


@dataclass
class TrainingParts:
    """The objects :class:`~firebreak_exp.rl.trainer.ParallelFuelBreakTrainer` trains with."""
    vec_env: VectorizedFireEnv
    agent: DQNAgent
    replay: ReplayBuffer
    evaluation: HeldoutEvaluation         # called with the trained agent at the end of the run
    expert_memories: Optional[dict]       # pre-training transitions (rl.memories arrays); None: no pre-training


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, numpy and torch. ``deterministic`` turns off oneDNN convolutions: their rounding
    depends on what the process ran before, so a resumed run would drift from an uninterrupted one."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.mkldnn.enabled = not deterministic


def build_training(cfg, resume: bool = False) -> TrainingParts:
    """Seed the run (:func:`seed_everything`), then build its parts from ``cfg``: the vector env of
    ``cfg.parallel``, the agent of ``cfg.agent``, the replay of ``cfg.replay``, the evaluation of
    ``trainer.eval_episodes`` held-out tiles and, unless ``resume`` (the checkpoint holds the buffer) or
    ``trainer.expert_memories`` is 0, the expert memories (read from their cache or generated)."""
    seed_everything(int(cfg.seed), cfg.trainer.deterministic)
    vec_env = make_vector_env(cfg)
    try:
        obs_shape = vec_env.single_observation_space.shape
        agent, replay = make_agent(cfg, obs_shape), make_replay(cfg, obs_shape)
        evaluation = HeldoutEvaluation.from_config(cfg, episodes=cfg.trainer.eval_episodes)
        pretrain = not resume and cfg.trainer.expert_memories > 0
        memories = load_or_generate_expert_memories(cfg) if pretrain else None
        return TrainingParts(vec_env, agent, replay, evaluation, memories)
    except BaseException:
        vec_env.close()
        raise
