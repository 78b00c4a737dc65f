"""``python -m stackvault``."""

from stackvault.cli.main import run

run()
