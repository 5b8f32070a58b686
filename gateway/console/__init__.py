"""The operator console: a read-only status page with a try-it panel, and its JSON endpoints."""

from gateway.console.handler import CONSOLE_PREFIX, Console

__all__ = ["CONSOLE_PREFIX", "Console"]
