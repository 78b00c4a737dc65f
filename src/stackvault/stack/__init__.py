"""Whole-stack orchestration: Compose discovery, presets, plans, stack backup and restore."""
