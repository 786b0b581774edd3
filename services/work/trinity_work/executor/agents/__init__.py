"""Agent backends behind the AgentGateway (the anti-corruption layer to agent runtimes)."""
