"""stackvault: back up, verify and restore whole self-hosted application stacks."""

__version__ = "0.1.0"
