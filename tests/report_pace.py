"""Klaviyo allows 2 report calls a minute and the source keeps to that, so every first load in a test would
wait minutes for its report tables. Tests lift that pace: in the test process for the whole session
(tests/conftest.py), and in the CLI's own process where tests start it as a scheduler would
(tests/integration/cli_driver.py). The sandboxes of tests have no limits, or set their own where a test is
about the report budget (tests/integration/test_reports.py runs in-process with its own governors)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from klaviyo_source.endpoints import Tier
from klaviyo_source.rate_limit import GovernorRegistry

UNTHROTTLED = Tier(1000, 100_000)
Get = Callable[[GovernorRegistry, str, Tier], Any]


def lifted(original: Get) -> Get:
    """GovernorRegistry.get that hands the endpoints with a daily cap (the reports) an unthrottled governor."""

    def get(self: GovernorRegistry, key: str, tier: Tier) -> Any:
        return original(self, f"{key}#unthrottled", UNTHROTTLED) if tier.daily else original(self, key, tier)

    return get
