"""The sidecar as processes: serve, workers under the supervisor, restarts, logs."""
