"""The WorkRequest aggregate: pure standard library (plus the shared process-model kernel)."""
