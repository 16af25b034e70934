"""An interrupted chunked backfill resumes at its last completed chunk and still loads every row once.

The default run uses 100k events; `-m slow` runs the same test with 1M events.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dlt
import pytest
from dlt.pipeline.exceptions import PipelineStepFailed

from klaviyo_source.backfill import backfill, read_through
from klaviyo_source.client import KlaviyoClient
from klaviyo_source.errors import KlaviyoAPIError
from klaviyo_source.failures import root_cause
from klaviyo_source.sandbox import Sandbox
from tests.integration.conftest import SIZES, Loader, assert_matches_ground_truth

CHUNK_DAYS = 90
PAGE = 1000  # events per page (Klaviyo's maximum, which the source asks for)
LOWER = re.compile(r"greater-or-equal\(datetime,([^,)]+)\)")


def events_requests(sandbox: Sandbox) -> int:
    return sum(r["count"] for r in sandbox.stats()["requests"] if r["path"] == "/api/events")


@pytest.fixture
def event_filters(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The filter of every first page request to /events (later pages follow links.next)."""
    filters: list[str] = []
    original = KlaviyoClient.get

    def get(self: KlaviyoClient, url: str, params: Any, governor: Any, label: str, *rest: Any) -> Any:
        if label == "/events" and params:
            filters.append(params["filter"])
        return original(self, url, params, governor, label, *rest)

    monkeypatch.setattr(KlaviyoClient, "get", get)
    yield filters


def interrupted_backfill_resumes(events: int, tmp_path: Path, filters: list[str]) -> dict[str, int]:
    anchor = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
    sizes = {**SIZES, "events": events, "profiles": max(400, events // 50)}
    with Sandbox(seed=11, rate_limits="off", anchor=anchor, **sizes) as sandbox:
        loader = Loader(sandbox, dlt.destinations.duckdb(str(tmp_path / "klaviyo.duckdb")), tmp_path)
        start = anchor - timedelta(days=5 * 365 + 30)  # before the sandbox's oldest event
        options = {"api_key": sandbox.api_key, "base_url": sandbox.base_url, "concurrency": 1}

        # Klaviyo goes down once ~80% of the event pages have been read: late in the backfill
        cut = int(0.8 * events / PAGE)
        sandbox.configure(faults=[{"kind": "outage", "from_request": cut, "path": "/api/events"}])
        with pytest.raises(PipelineStepFailed) as caught:
            backfill(loader.pipeline(), start, CHUNK_DAYS, **options)
        assert isinstance(root_cause(caught.value), KlaviyoAPIError)
        done = read_through(loader.pipeline(), ["events", "profiles"])
        assert done is not None and start < done < anchor, "the completed chunks were not committed"
        # exactly the events before the committed cursor are loaded: none skipped, none beyond it
        assert set(loader.keys("events")) == sandbox.ground_truth(until=done)["events"]
        loaded_before = len(loader.keys("events"))

        sandbox.clear_faults()
        sandbox.reset_stats()
        filters.clear()
        backfill(loader.pipeline(), start, CHUNK_DAYS, **options)
        loader.run(start_date=start, **options)  # the regular run after the backfill
        resumed = events_requests(sandbox)
        checked = assert_matches_ground_truth(loader)

        # no request reads below the committed cursor ...
        lowers = [datetime.fromisoformat(m.group(1).replace("Z", "+00:00")) for f in filters
                  if (m := LOWER.search(f))]
        assert len(lowers) == len(filters) and min(lowers) >= done
        # ... so the resumed run needs about the pages of the rest, far fewer than those of all history
        rest = checked["events"] - loaded_before
        windows = len(filters)
        assert resumed <= math.ceil(rest / PAGE) + 2 * windows
        assert math.ceil(rest / PAGE) + 2 * windows < math.ceil(checked["events"] / PAGE)
        return {"events": checked["events"], "loaded before": loaded_before, "resumed requests": resumed,
                "windows": windows}


def test_interrupted_backfill_resumes_without_rereading(tmp_path: Path, event_filters: list[str],
                                                        fast_retries: Any, capsys: pytest.CaptureFixture[str]) -> None:
    result = interrupted_backfill_resumes(100_000, tmp_path, event_filters)
    with capsys.disabled():
        print(f"\nbackfill 100k: {result}")


@pytest.mark.slow
def test_interrupted_1m_event_backfill_resumes_without_rereading(
    tmp_path: Path, event_filters: list[str], fast_retries: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    result = interrupted_backfill_resumes(1_000_000, tmp_path, event_filters)
    with capsys.disabled():
        print(f"\nbackfill 1M: {result}")
