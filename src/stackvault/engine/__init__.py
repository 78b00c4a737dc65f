"""Engine layer: backup and restore pipelines (thread pools, back-pressure, progress events)."""
