"""A user's own environment, importable by name (``env._target_=custom_env.DoubledRewardEnv``) in the
test process and in the workers of every backend."""
from firebreak_exp.environment import FuelBreakEnv


class DoubledRewardEnv(FuelBreakEnv):
    """FuelBreakEnv with every reward doubled: its transitions tell whether this class ran."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, 2.0 * reward, terminated, truncated, info


class CountingEnv(FuelBreakEnv):
    """FuelBreakEnv that counts its episodes (class-wide): planners that run the MDP through it raise the count."""

    episodes = 0

    def reset(self, *, seed=None, options=None):
        CountingEnv.episodes += 1
        return super().reset(seed=seed, options=options)
