"""trinity_cli."""
