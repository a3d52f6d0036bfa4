"""VectorizedFireEnv: the backends give identical transitions, arguments are checked, tiles are shared."""
import numpy as np
import pytest
from conftest import rollout
from custom_env import DoubledRewardEnv

from firebreak_exp import make_vector_env


@pytest.mark.slow
def test_backends_give_identical_transitions(make_cfg):
    """Sequential, thread, process and joblib backends: same seed and actions, bit-identical transitions."""
    cfg = make_cfg("parallel.num_envs=3", "simulator=pyretechnics")
    traces = {}
    for method in ("sequential", "threading", "process", "joblib"):
        with make_vector_env(cfg, backend=method, max_workers=2) as vec_env:
            traces[method] = rollout(vec_env, seed=11, steps=12)
    reference, reference_stats = traces["sequential"]
    assert reference_stats["total_episodes"] > 0  # autoreset happened within the rollout
    for method, (trace, stats) in traces.items():
        assert len(trace) == len(reference)
        for a, b in zip(trace, reference):
            np.testing.assert_array_equal(a, b, err_msg=method)
        assert stats == reference_stats


def test_environments_of_one_process_share_their_tiles_simulators(make_cfg):
    """Simulators keep no episode state: a vector env's environments build each tile's once between them and
    step exactly as environments that build their own."""
    from firebreak_exp.environment import FuelBreakEnv
    from firebreak_exp.factory import build_landscapes, env_factory
    from firebreak_exp.vector.env import VectorizedFireEnv

    class OwnSimulators(VectorizedFireEnv):
        def create_environment(self, index):
            return FuelBreakEnv(self.landscapes, **self.env_kwargs)

    cfg = make_cfg("parallel.num_envs=3")
    tiles = build_landscapes(cfg).train
    with make_vector_env(cfg) as shared, OwnSimulators(tiles, 3, env_kwargs=env_factory(cfg).keywords) as own:
        shared_trace, shared_stats = rollout(shared, seed=4, steps=14)
        own_trace, own_stats = rollout(own, seed=4, steps=14)
        visited = {int(t) for t in shared.call("__getattribute__", "tile_index")}
        for tile_index in visited:
            assert len({id(s) for s in shared.call("simulator", tile_index)}) == 1
            assert len({id(s) for s in own.call("simulator", tile_index)}) == 3
    assert shared_stats["total_episodes"] > 0
    for a, b in zip(shared_trace, own_trace, strict=True):
        np.testing.assert_array_equal(a, b)
    assert shared_stats == own_stats


@pytest.mark.parametrize("backend", ["sequential", "process"])
def test_the_env_groups_target_is_the_environment_of_every_backend(make_cfg, backend):
    """``env._target_=<module.Class>`` (a FuelBreakEnv subclass) is what each environment is, in this process
    and in the worker processes: its doubled rewards come back, with the same observations."""
    cfg = make_cfg("parallel.num_envs=2")
    with make_vector_env(cfg, backend="sequential") as vec_env:
        reference, reference_stats = rollout(vec_env, seed=3, steps=8)
    custom = make_cfg("parallel.num_envs=2", "env._target_=custom_env.DoubledRewardEnv")
    with make_vector_env(custom, backend=backend, max_workers=2) as vec_env:
        assert vec_env.call("__getattribute__", "__class__") == (DoubledRewardEnv, DoubledRewardEnv)
        trace, stats = rollout(vec_env, seed=3, steps=8)
    assert len(trace) == len(reference) and np.abs(np.concatenate(reference[2::4])).sum() > 0
    for i, (a, b) in enumerate(zip(trace, reference)):   # per step: observations, rewards, terminations, finals
        np.testing.assert_array_equal(a, 2 * b if i % 4 == 2 else b)
    assert stats["total_episodes"] == reference_stats["total_episodes"] > 0


def test_vector_env_validates_arguments(make_cfg):
    cfg = make_cfg()
    with pytest.raises(ValueError, match="num_envs"):
        make_vector_env(cfg, num_envs=0)
    with pytest.raises(ValueError, match="unknown parallel backend 'gpu'"):
        make_vector_env(cfg, backend="gpu")
