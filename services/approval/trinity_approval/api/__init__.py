"""The gRPC edge: a thin servicer and the request validation it uses."""
