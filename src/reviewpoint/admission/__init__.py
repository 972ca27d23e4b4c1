"""Admission: who may start a request now — rate limits and concurrency caps.

Budgets (`RateLimiter`, `Policy`) and per-credential caps (`ConcurrencyLimiter`)
live in process memory or in one Redis shared by every worker; an unreachable
store raises `AdmissionStoreUnavailable` (503) rather than letting requests
through unchecked.
"""

from reviewpoint.admission.leases import ConcurrencyLimiter
from reviewpoint.admission.rate_limits import Decision, Policy, RateLimiter
from reviewpoint.admission.store import check_storage_url
from reviewpoint.errors import AdmissionStoreUnavailable, TooManyRequests

__all__ = [
    "AdmissionStoreUnavailable",
    "ConcurrencyLimiter",
    "Decision",
    "Policy",
    "RateLimiter",
    "TooManyRequests",
    "check_storage_url",
]
