"""Every limit a request can meet in one worker, and the answers it gets.

An export passes three checks before it touches the database, each refusing
at once with 429 and `Retry-After` rather than queueing:

1. a slot among this worker's `export_slots`: the export pool holds exactly
   that many exports' connections, so a slot means connections are free;
2. a lease among the credential's `REVIEWPOINT_EXPORT_MAX_CONCURRENT_PER_CREDENTIAL`
   (shared by every worker when the store is Redis);
3. the credential's rate budget (`REVIEWPOINT_EXPORT_RATE_LIMIT`).

What an export is admitted to is held in an `AsyncExitStack` that the export
owns and closes when its body ends. A conditional export answered 304
(`exports/conditional.py`) passes the budget only. Every refusal is also reported to
`on_refusal` (the metrics), by kind: a `rate` budget spent, or a `concurrency`
cap full (the login route reports its own: too many password checks at once).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Annotated, Literal

from fastapi import Depends, Request

from reviewpoint.admission.leases import ConcurrencyLimiter
from reviewpoint.admission.rate_limits import Decision, Policy, RateLimiter
from reviewpoint.config import Settings
from reviewpoint.errors import TooManyRequests

# Seconds a refused export is asked to wait: slots free as fast as exports end.
SLOT_RETRY_AFTER = 1

RefusalKind = Literal["rate", "concurrency"]
RefusedAction = Literal["export", "login"]
RefusalObserver = Callable[[RefusalKind, RefusedAction], None]


def _ignore_refusal(kind: RefusalKind, action: RefusedAction) -> None:
    pass


class Admission:
    def __init__(self, settings: Settings, *, on_refusal: RefusalObserver | None = None) -> None:
        prefix = settings.rate_limit_prefix
        self.rate_limiter = RateLimiter(settings.rate_limit_storage, key_prefix=f"{prefix}:limits")
        self.leases = ConcurrencyLimiter(settings.rate_limit_storage, key_prefix=f"{prefix}:leases")
        self.export_policy = Policy.parse("exports", settings.export_rate_limit)
        self.login_policy = Policy.parse("logins", settings.login_rate_limit)
        self.export_slots = settings.export_slots
        self.per_credential = settings.export_max_concurrent_per_credential
        self.exports_running = 0
        self.on_refusal = on_refusal or _ignore_refusal

    async def admit_export(self, credential: str) -> tuple[AsyncExitStack, Decision]:
        """Admit one export of `credential`, or raise 429; the stack holds its place.

        The caps come before the budget: an attempt refused because others are
        running does not spend the credential's budget, so following its
        `Retry-After` costs nothing.
        """
        held = AsyncExitStack()
        try:
            if self.exports_running >= self.export_slots:
                raise self._refuse(
                    "concurrency",
                    "export",
                    f"This server already runs {self.export_slots} exports; retry shortly",
                    retry_after=SLOT_RETRY_AFTER,
                )
            self.exports_running += 1
            held.callback(self._free_slot)
            if not await held.enter_async_context(
                self.leases.acquire(credential, self.per_credential)
            ):
                raise self._refuse(
                    "concurrency",
                    "export",
                    f"This credential already runs {self.per_credential} exports; "
                    "retry when one finishes",
                    retry_after=SLOT_RETRY_AFTER,
                )
            budget = await self._spend_export_budget(credential)
        except BaseException:
            await held.aclose()
            raise
        return held, budget

    async def admit_revalidation(self, credential: str) -> Decision:
        """Count a conditional export answered 304 against the credential's budget, or 429.

        No slot and no lease: a 304 reads one row and holds nothing while it is
        sent. It spends budget like any export call, so polling with
        `If-None-Match` is bounded by the same policy as polling without.
        """
        return await self._spend_export_budget(credential)

    async def _spend_export_budget(self, credential: str) -> Decision:
        budget = await self.rate_limiter.hit(self.export_policy, credential)
        if not budget.allowed:
            raise self._refuse(
                "rate",
                "export",
                f"Export rate limit reached ({self.export_policy.item}); retry later",
                retry_after=budget.reset_after,
                headers=budget.headers(),
            )
        return budget

    def _refuse(
        self,
        kind: RefusalKind,
        action: RefusedAction,
        detail: str,
        *,
        retry_after: int,
        headers: dict[str, str] | None = None,
    ) -> TooManyRequests:
        self.on_refusal(kind, action)
        return TooManyRequests(detail, retry_after=retry_after, headers=headers)

    def _free_slot(self) -> None:
        self.exports_running -= 1

    async def admit_login(self, *, address: str, account: str) -> Decision:
        """Count a login attempt against its client address and its account, or raise 429."""
        decision = await self.rate_limiter.hit(self.login_policy, "address", address)
        if decision.allowed:
            decision = await self.rate_limiter.hit(self.login_policy, "account", account)
        if not decision.allowed:
            raise self._refuse(
                "rate",
                "login",
                "Too many login attempts; retry later",
                retry_after=decision.reset_after,
                headers=decision.headers(),
            )
        return decision

    async def close(self) -> None:
        await self.rate_limiter.close()
        await self.leases.close()


def get_admission(request: Request) -> Admission:
    admission: Admission = request.app.state.admission
    return admission


AdmissionDep = Annotated[Admission, Depends(get_admission)]
