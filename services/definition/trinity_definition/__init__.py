"""trinity_definition."""
