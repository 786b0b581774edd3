"""Repository-wide pytest setup: the shared fixtures of the platform library."""

pytest_plugins = ["trinity_platform.testing.fixtures", "trinity_platform.testing.leaks"]
