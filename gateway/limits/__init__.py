"""Budgets and rate limits per tenant: windows, counters in Redis or in-process, the governor."""

from gateway.limits.caller import Caller
from gateway.limits.governor import BudgetState, Governor, GovernorState, SpendHistory, TenantHistory, build_governor

__all__ = ["BudgetState", "Caller", "Governor", "GovernorState", "SpendHistory", "TenantHistory", "build_governor"]
