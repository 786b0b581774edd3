"""The gRPC edge: thin servicer translating proto ↔ commands."""
