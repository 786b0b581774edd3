"""Storage (SQLAlchemy Core), the outbox facts and the transactions of the definition service."""
