"""Adapters: tables, repository, unit of work, deadline watcher, work notifications."""
