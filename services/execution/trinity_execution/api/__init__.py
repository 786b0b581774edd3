"""api layer of the execution service."""
