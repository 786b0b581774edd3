"""The web console: processes, executions, approvals, in a browser.

A client of the services like any other: every page is built from their public gRPC
APIs, called with the signed-in person's bearer token, so the services' own
authorization decides what that person sees and may do. The console holds no
privilege of its own and stores nothing.
"""
