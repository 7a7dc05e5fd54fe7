"""roborl.teleop."""
