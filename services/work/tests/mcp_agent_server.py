"""A small MCP server (stdio) the mcp backend tests talk to."""

from mcp.server.mcpserver import MCPServer

server = MCPServer("trinity-test-agent")


@server.tool()
def ask(message: str, agent: str = "") -> dict[str, object]:
    """Answer a task: JSON with output, cost and context used."""
    if "explode" in message:
        raise ValueError("the agent exploded")
    return {"output": f"mcp {agent} says: {message}", "cost": "0.10", "context_used": 42}


@server.tool()
def plain(message: str) -> str:
    """Answer with plain text."""
    return message.upper()


if __name__ == "__main__":
    server.run()
