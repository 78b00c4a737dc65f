"""Operations layer: protection that runs itself — `run` (one cycle of a job), the daemon,
status against the objectives, and the run records written into each repository."""
