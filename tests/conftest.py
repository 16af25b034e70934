"""Suite-wide pytest hooks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from klaviyo_source.rate_limit import GovernorRegistry
from tests.report_pace import lifted


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
    """Klaviyo's report pace lifted for the whole session (tests/report_pace.py says why)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(GovernorRegistry, "get", lifted(GovernorRegistry.get))
        yield
