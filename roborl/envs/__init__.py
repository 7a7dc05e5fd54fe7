"""roborl.envs."""
