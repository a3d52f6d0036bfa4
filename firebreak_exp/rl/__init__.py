"""Reinforcement learning: the Q-network, replay, the DQN agent, expert memories, checkpoints and the trainer."""
