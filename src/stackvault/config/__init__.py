"""Configuration layer: the file a person edits (repositories, policies with RPO/RTO tiers,
jobs), validated once where it is read, every mistake named by key and line."""
