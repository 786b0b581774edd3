"""trinity_platform."""
