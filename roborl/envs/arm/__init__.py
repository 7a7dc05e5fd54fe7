"""Our MuJoCo arm and its tasks."""
