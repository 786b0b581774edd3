"""A small MCP server (stdio) the mcp backend tests talk to."""

import json

from mcp.server.mcpserver import MCPServer

server = MCPServer("trinity-test-agent")


@server.tool()
def ask(message: str, agent: str = "") -> str:
    """Answer a task: JSON with output, cost and context used (plain text when asked)."""
    if "explode" in message:
        raise ValueError("the agent exploded")
    if message.startswith("plain:"):
        return message.removeprefix("plain:").upper()
    return json.dumps(
        {"output": f"mcp {agent} says: {message}", "cost": "0.10", "context_used": 42}
    )


if __name__ == "__main__":
    server.run()
