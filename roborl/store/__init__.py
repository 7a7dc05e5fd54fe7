"""roborl.store."""
