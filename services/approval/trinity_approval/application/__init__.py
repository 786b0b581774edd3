"""Command and query handlers: plain coroutines over a unit of work."""
