"""Test support code: real servers and fault injectors that tests start and stop themselves."""
