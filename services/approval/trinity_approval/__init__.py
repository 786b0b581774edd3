"""trinity_approval."""
