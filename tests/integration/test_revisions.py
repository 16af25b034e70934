"""The source at the oldest and the newest Klaviyo revision it supports, end to end against the sandbox, which
answers each revision with its own rules (a parameter the revision lacks is a 400, as Klaviyo answers)."""

from __future__ import annotations

import pytest

from klaviyo_source import TABLES
from klaviyo_source.endpoints import NEWEST_REVISION, OLDEST_REVISION
from klaviyo_source.sandbox import Sandbox
from tests.integration.conftest import Loader, assert_matches_ground_truth, assert_reports_match_ground_truth


@pytest.mark.parametrize("revision", [OLDEST_REVISION, NEWEST_REVISION])
def test_full_load_at_each_supported_revision(loader: Loader, sandbox: Sandbox, revision: str) -> None:
    sandbox.reset_stats()
    loader.run(revision=revision)
    checked = {**assert_matches_ground_truth(loader), **assert_reports_match_ground_truth(loader)}
    assert set(checked) == set(TABLES)
    # a parameter the revision lacks would have been a 400 (and a failed run): the source left it out
    statuses = {row["status"] for row in sandbox.stats()["requests"]}
    assert statuses == {200}, sandbox.stats()["requests"]

