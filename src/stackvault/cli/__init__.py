"""CLI layer: parse, wire, render. Nothing imports it."""
