"""Sources layer: capture and restore adapters (files, ...); never imports the repository."""
