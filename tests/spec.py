"""Where the tests find Klaviyo's OpenAPI spec: KLAVIYO_OPENAPI_SPEC, or ../shared/klaviyo beside the repo."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = REPO.parent / "shared" / "klaviyo" / "openapi-stable-2026-07-15.json"


@cache
def load_spec() -> dict[str, Any]:
    """The spec, or a skip that says where it was looked for."""
    env = os.environ.get("KLAVIYO_OPENAPI_SPEC")
    path = Path(env) if env else DEFAULT_SPEC
    if not path.is_file():
        pytest.skip(f"Klaviyo OpenAPI spec not found: set KLAVIYO_OPENAPI_SPEC or put it at {DEFAULT_SPEC}")
    return json.loads(path.read_text())
