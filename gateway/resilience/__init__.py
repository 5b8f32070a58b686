"""Staying up when backends do not: target choice, retries, fallbacks, breakers, deadlines, drain."""
