"""The usage ledger: one row per invocation, written off the request path to SQLite or PostgreSQL."""
