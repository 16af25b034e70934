"""Shared fixtures: one small thread-mode sandbox per module, an HTTP helper, and the OpenAPI spec."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from klaviyo_source.sandbox import Sandbox
from tests.spec import load_spec

REVISION = "2026-07-15"

SMALL_SIZES: dict[str, int] = {
    "events": 240,
    "profiles": 50,
    "lists": 3,
    "segments": 3,
    "members_per_list": 20,
    "members_per_segment": 15,
    "campaigns": 12,
    "flows": 3,
    "actions_per_flow": 3,
    "messages_per_action": 2,
    "templates": 12,
    "tags": 5,
    "catalog_items": 12,
    "variants_per_item": 2,
    "catalog_categories": 4,
    "coupons": 2,
    "codes_per_coupon": 8,
}


@pytest.fixture(scope="session")
def spec() -> dict[str, Any]:
    return load_spec()


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(seed=7, rate_limits="off", **SMALL_SIZES) as sb:
        yield sb


class Client:
    """A keep-alive session that sends Klaviyo's auth and revision headers."""

    def __init__(self, sb: Sandbox, key: str | None = None) -> None:
        self.sb = sb
        self.session = requests.Session()
        self.headers = {
            "Authorization": f"Klaviyo-API-Key {key or sb.api_key}",
            "revision": REVISION,
            "Accept": "application/vnd.api+json",
        }

    def get(self, path: str, params: Any = None, **headers: str | None) -> requests.Response:
        url = path if path.startswith("http") else self.sb.base_url + path
        merged = {**self.headers, **headers}
        return self.session.get(url, params=params, headers={k: v for k, v in merged.items() if v is not None})

    def post(self, path: str, body: Any, **headers: str) -> requests.Response:
        return self.session.post(self.sb.base_url + path, json=body, headers={**self.headers, **headers})

    def walk(self, path: str, params: Any = None) -> list[dict[str, Any]]:
        """Every record of a collection, following links.next to the end."""
        records: list[dict[str, Any]] = []
        response = self.get(path, params)
        while True:
            assert response.status_code == 200, response.text
            doc = response.json()
            records += doc["data"]
            if not doc["links"].get("next"):
                return records
            response = self.get(doc["links"]["next"])


@pytest.fixture(scope="module")
def client(sandbox: Sandbox) -> Client:
    return Client(sandbox)
