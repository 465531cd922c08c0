"""Where trials run: the driver loop, executors, the Ray connection, jobs, the driver lock, metrics."""
