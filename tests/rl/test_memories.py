"""Expert memories: DomiRank and fire-flow episodes of the real MDP (real simulations), cached on disk."""
import numpy as np
import pytest

from conftest import make_agent

from firebreak_exp.factory import build_landscapes, env_factory
from firebreak_exp.observation import BUDGET_CHANNEL, CHANNELS, FUEL_BREAK_CHANNEL
from firebreak_exp.rl.memories import (fill_replay, load_or_generate_expert_memories, memory_observations,
                                       memory_path, MEMORY_SEED_OFFSET, memory_stats)
from firebreak_exp.rl.replay import ReplayBuffer

OVERRIDES = ("trainer.expert_memories=3", "trainer.memory_simulations=2", "trainer.expert_planner=domirank")


@pytest.fixture
def memories_setup(make_cfg, tmp_path):
    cfg = make_cfg(*OVERRIDES)
    cache = tmp_path / "memories"
    memories = load_or_generate_expert_memories(cfg, cache_dir=cache)
    return cfg, cache, memories


def test_cached_memories_are_reused_and_regenerate_rebuilds(memories_setup, make_cfg):
    cfg, cache, memories = memories_setup
    path = memory_path(cfg, 3, cache)
    assert path.parent == cache and path.is_file() and not list(cache.glob("*.tmp"))
    first = path.stat()
    again = load_or_generate_expert_memories(cfg, cache_dir=cache)
    assert path.stat().st_mtime_ns == first.st_mtime_ns and path.stat().st_ino == first.st_ino
    assert set(again) == set(memories) and all(np.array_equal(again[k], memories[k]) for k in memories)
    rebuilt = load_or_generate_expert_memories(cfg, regenerate=True, cache_dir=cache)
    assert path.stat().st_ino != first.st_ino                      # replaced (atomically) by a new file
    assert np.array_equal(rebuilt["actions"], memories["actions"])   # deterministic
    # what shapes the memories is in the key; where rasters are cached is not
    other = make_cfg("trainer.expert_memories=3", "trainer.memory_simulations=3")
    assert memory_path(other, 3, cache) != path and memory_path(cfg, 4, cache) != path
    moved = make_cfg(*OVERRIDES)
    moved.landscape.cache_dir = "/somewhere/else"
    assert memory_path(moved, 3, cache) == path


def test_transitions_follow_the_mdp(memories_setup):
    cfg, _, memories = memories_setup
    train = build_landscapes(cfg).train
    episodes = memories["episode"]
    assert sorted(set(episodes.tolist())) == [0, 1, 2]
    states, next_states = memory_observations(memories, 0), memory_observations(memories, 1)
    assert states.shape[1:] == (len(CHANNELS), *train[0].shape) and states.dtype == np.float32
    for e in range(3):
        rows = np.flatnonzero(episodes == e)
        rewards = memories["rewards"][rows]
        # the return is the total reduction of the expected burned fraction
        assert rewards.sum() == pytest.approx(memories["initial_burned_fraction"][e]
                                              - memories["final_burned_fraction"][e], abs=1e-6)
        assert memories["episode_return"][e] == pytest.approx(rewards.sum(), abs=1e-6)
        assert memories["dones"][rows].tolist() == [False] * (len(rows) - 1) + [True]
        for i in rows:
            row, col = divmod(int(memories["actions"][i]), train[0].shape[1])
            assert states[i, FUEL_BREAK_CHANNEL, row, col] == 0 and next_states[i, FUEL_BREAK_CHANNEL, row, col] == 1
            assert next_states[i, FUEL_BREAK_CHANNEL].sum() == states[i, FUEL_BREAK_CHANNEL].sum() + 1
            assert next_states[i, BUDGET_CHANNEL, 0, 0] < states[i, BUDGET_CHANNEL, 0, 0]
        assert np.array_equal(next_states[rows[:-1]], states[rows[1:]])     # chained within the episode
        # replaying the actions in a fresh environment gives the same rewards
        env = env_factory(cfg)(train, num_ignitions=2)
        env.reset(seed=int(cfg.seed) + MEMORY_SEED_OFFSET + e, options={"tile_index": int(memories["episode_tile"][e])})
        replayed = [env.step(int(a))[1] for a in memories["actions"][rows]]
        assert np.allclose(replayed, rewards, atol=1e-6)
    stats = memory_stats(memories)
    assert stats["expert/episodes"] == 3 and stats["expert/transitions"] == len(episodes)


def test_fill_replay_adds_every_transition(memories_setup):
    cfg, _, memories = memories_setup
    obs_shape = (len(CHANNELS), *build_landscapes(cfg).train[0].shape)
    replay = ReplayBuffer(100, obs_shape, seed=0)
    added = fill_replay(replay, memories, chunk_size=4)
    assert added == len(replay) == len(memories["actions"])
    slots = np.arange(added)
    assert np.array_equal(replay.actions[:added], memories["actions"])
    assert np.allclose(replay._observations(slots, 1), memory_observations(memories, 1), atol=2e-3)
    batch = replay.sample(8, "cpu")
    assert batch["obs"].shape == (8, *obs_shape)


def test_flow_expert_plays_the_fire_flow_plan_of_the_shown_fires(make_cfg, tmp_path):
    from firebreak_exp.planning.planners import FireFlowPlanner
    cfg = make_cfg(*OVERRIDES, "trainer.expert_planner=flow")
    memories = load_or_generate_expert_memories(cfg, cache_dir=tmp_path)
    assert memory_path(cfg, 3, tmp_path) != memory_path(make_cfg(*OVERRIDES), 3, tmp_path)   # the expert is in the key
    env = env_factory(cfg)(build_landscapes(cfg).train, num_ignitions=2)
    for e in range(3):
        env.reset(seed=int(cfg.seed) + MEMORY_SEED_OFFSET + e, options={"tile_index": int(memories["episode_tile"][e])})
        tile = env.landscapes[env.tile_index]
        plan = FireFlowPlanner().plan(tile, env.simulator(env.tile_index), env.scenario, env.budget, env.ignitions,
                                      np.random.default_rng(e))
        assert np.array_equal(memories["actions"][memories["episode"] == e], plan)


def test_local_search_expert_plays_its_improved_plan(make_cfg, tmp_path):
    """Expert iteration's stronger demonstrator: the local search's plan of the shown fires, which burns no more
    of them than the fire-flow plan it starts from, played in fire-flow order (each step takes the plan's cell
    with the most fire flow in its state); the search and its settings are in the cache key."""
    from firebreak_exp.planning.planners import FireFlowPlanner
    from firebreak_exp.planning.search import LocalSearchPlanner
    settings = ("planners.local_search.candidates=4", "planners.local_search.max_passes=1")
    cfg = make_cfg(*OVERRIDES, "trainer.expert_planner=local_search", *settings)
    memories = load_or_generate_expert_memories(cfg, cache_dir=tmp_path)
    flow_cfg = make_cfg(*OVERRIDES, "trainer.expert_planner=flow", *settings)
    wider = make_cfg(*OVERRIDES, "trainer.expert_planner=local_search", "planners.local_search.candidates=8")
    assert len({memory_path(c, 3, tmp_path) for c in (cfg, flow_cfg, wider)}) == 3
    env = env_factory(cfg)(build_landscapes(cfg).train, num_ignitions=2)
    for e in range(3):
        env.reset(seed=int(cfg.seed) + MEMORY_SEED_OFFSET + e, options={"tile_index": int(memories["episode_tile"][e])})
        tile, simulator = env.landscapes[env.tile_index], env.simulator(env.tile_index)
        search = LocalSearchPlanner(FireFlowPlanner(), candidates=4, max_passes=1)
        plan = search.plan(tile, simulator, env.scenario, env.budget, env.ignitions, np.random.default_rng(e))
        steps = memories["episode"] == e
        actions, flows = memories["actions"][steps], memories["fire_flow"][steps, 0].reshape(steps.sum(), -1)
        assert sorted(actions.tolist()) == sorted(plan.tolist())
        for t, action in enumerate(actions):
            assert flows[t, action] == flows[t, actions[t:]].max()
        assert search.last_search["burned_cells"] <= search.last_search["initial_burned_cells"]
    with pytest.raises(ValueError, match="trainer.expert_planner=policy: expected one of"):
        make_cfg(*OVERRIDES, "trainer.expert_planner=policy")


@pytest.mark.slow
def test_margin_loss_pretraining_imitates_the_expert(make_cfg, tmp_path):
    """DQfD pre-training: with the large-margin loss the greedy policy picks the expert's cell on (nearly)
    every demonstration state; on TD targets alone it does not."""
    import torch
    from firebreak_exp.rl.network import action_mask, masked_argmax
    cfg = make_cfg(*OVERRIDES, "trainer.expert_planner=flow")
    memories = load_or_generate_expert_memories(cfg, cache_dir=tmp_path)
    obs_shape = (len(CHANNELS), *build_landscapes(cfg).train[0].shape)
    states = torch.as_tensor(memory_observations(memories, 0))
    matches = {}
    for weight in (0.0, 1.0):
        agent = make_agent(obs_shape, channels=8, num_layers=3, reward_scale=100.0, n_step=1, epsilon_decay_steps=2000,
                           num_threads=None, expert_loss_weight=weight)
        replay = ReplayBuffer(200, obs_shape, seed=0)
        fill_replay(replay, memories)
        assert replay.expert[:len(replay)].all()
        for _ in range(400):
            agent.update(replay.sample(16, "cpu"))
        with torch.no_grad():
            greedy = masked_argmax(agent.q_network(states), action_mask(states)).numpy()
        matches[weight] = float(np.mean(greedy == memories["actions"]))
    assert matches[1.0] >= 0.9 and matches[1.0] > matches[0.0] + 0.3, matches
