"""Klaviyo allows 2 report calls a minute and the source keeps to that, so every first load in a test would
wait minutes for its report tables; and every scheduled run's verification would wait ~7 s on its counts (20
metrics' aggregates at 3/s, a list's or segment's profile_count at 1/s). Tests lift those paces: in the test
process for the whole session (tests/conftest.py), and in the CLI's own process where tests start it as a
scheduler would (tests/integration/cli_driver.py); the README's commands run as written, paced. The sandboxes
of tests have no limits, or set their own where a test is about the report budget
(tests/integration/test_reports.py runs in-process with its own governors)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from klaviyo_source.endpoints import CHECKS, Tier
from klaviyo_source.rate_limit import GovernorRegistry

UNTHROTTLED = Tier(1000, 100_000)
CHECK_PATHS = frozenset(check.path for check in CHECKS)  # verification's counts (klaviyo_source/verify.py)
Get = Callable[[GovernorRegistry, str, Tier], Any]


def lifted(original: Get) -> Get:
    """GovernorRegistry.get that hands the endpoints with a daily cap (the reports) and verification's counts
    an unthrottled governor."""

    def get(self: GovernorRegistry, key: str, tier: Tier) -> Any:
        if tier.daily or key in CHECK_PATHS:
            return original(self, f"{key}#unthrottled", UNTHROTTLED)
        return original(self, key, tier)

    return get
