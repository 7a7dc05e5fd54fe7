"""roborl.robots."""
