"""Policy layer: pure decisions (retention, ...) with reasons; no I/O."""
