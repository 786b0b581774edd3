"""Command and query handlers of the work service (plain inputs, plain outputs)."""
