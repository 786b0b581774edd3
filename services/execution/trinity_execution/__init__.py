"""trinity_execution."""
