"""trinity_work."""
