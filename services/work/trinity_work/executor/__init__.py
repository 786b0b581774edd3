"""Work executors: durable pull consumers of the work queue that do the work and report
only through the work service's gRPC write API. Executors never publish to NATS."""
