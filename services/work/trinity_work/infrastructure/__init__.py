"""Adapters of the work service: tables, repository, unit of work, outbox translation."""
