"""application layer of the execution service."""
