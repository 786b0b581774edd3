"""infrastructure layer of the execution service."""
