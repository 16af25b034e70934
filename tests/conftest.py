"""Suite-wide pytest hooks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from klaviyo_source.endpoints import Tier
from klaviyo_source.rate_limit import GovernorRegistry


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked slow (the 1M-event backfill, the long fuzz run) run only when asked for: `pytest -m slow`."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def unthrottled_reports() -> Iterator[None]:
    """Klaviyo allows 2 report calls a minute, so our governor would make every first load in a test wait for
    minutes (the session-wide loads of tests/analytics too); the sandboxes of tests have no limits, or set
    their own where a test is about the budget."""
    original = GovernorRegistry.get

    def get(self: GovernorRegistry, key: str, tier: Tier) -> Any:
        return original(self, f"{key}#unthrottled", Tier(1000, 100_000)) if tier.daily else original(self, key, tier)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(GovernorRegistry, "get", get)
        yield
