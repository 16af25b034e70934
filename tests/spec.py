"""Klaviyo's OpenAPI spec, shipped in the repository (spec/, MIT licensed by Klaviyo) so every test runs."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SPEC_PATH = Path(__file__).resolve().parents[1] / "spec" / "openapi-stable-2026-07-15.json"


@cache
def load_spec() -> dict[str, Any]:
    return json.loads(SPEC_PATH.read_text())
