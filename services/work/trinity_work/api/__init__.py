"""The gRPC edge: validation, proto → command → handler → proto."""
