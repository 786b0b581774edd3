"""The execution service's long-running loops: fact consumers, the command dispatcher,
the timer poller, schedules, event triggers, NATS message subjects and housekeeping.

An outer layer like api/: it drives application/ and may use infrastructure/;
neither of those imports it back.
"""
