"""Crypto layer: key derivation, key files, the AEAD envelope and keyed blob ids."""
