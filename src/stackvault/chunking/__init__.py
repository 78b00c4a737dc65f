"""Chunking layer: content-defined (keyed FastCDC) splitting of byte streams into blobs."""
