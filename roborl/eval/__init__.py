"""roborl.eval."""
