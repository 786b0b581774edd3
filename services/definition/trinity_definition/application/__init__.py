"""Command and query handlers of the definition service (no gRPC, SQL or NATS here)."""
