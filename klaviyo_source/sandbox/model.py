"""The contract between the simulator's HTTP layer (server.py) and its data (store.py).

The HTTP layer validates a request against Klaviyo's spec rules and turns it into a `Query`;
the store answers a `Query` with a `Page`. Neither side knows how the other works.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(frozen=True)
class Cond:
    """One filter condition, already parsed and validated against the endpoint's allowed operators.

    `op` is Klaviyo's operator name (equals, any, greater-or-equal, greater-than, less-or-equal,
    less-than, contains, contains-any, contains-all, starts-with, ends-with, has). `field` is the
    filter field as Klaviyo names it (e.g. "datetime", "messages.channel", "coupon.id").
    `value` is a Python value: str, bool, int, float, an aware UTC datetime, a list of those, or None
    for `has`.
    """

    op: str
    field: str
    value: Any = None


@dataclass(frozen=True)
class Query:
    """A validated GET on a collection.

    endpoint: the spec path template without the /api prefix, e.g. "/events", "/lists/{id}/profiles".
    path_id: the `{id}` of a nested path, else None.
    conds: conditions, ANDed.
    sort: (field, descending) or None when the request sent no `sort`.
    page_size: the effective page size (defaulted by the HTTP layer), or None when the endpoint is
        not paginated.
    cursor: the opaque `page[cursor]` the store handed out earlier (for the next or the previous page), or
        None for the first page.
    fields: sparse fieldsets, resource type -> attribute names (dotted sub-paths allowed).
    additional_fields: resource type -> extra attribute names (e.g. profile -> subscriptions).
    include: related resource names to put into `included`.
    account: the account id the API key belongs to.
    origin: what resource links start with, the server's `scheme://host:port`; "" leaves them path-only
        (`/api/...`). Links are written with it rather than rewritten in the answer's bytes afterwards.
    """

    endpoint: str
    path_id: str | None = None
    conds: tuple[Cond, ...] = ()
    sort: tuple[str, bool] | None = None
    page_size: int | None = None
    cursor: str | None = None
    fields: dict[str, tuple[str, ...]] = field(default_factory=dict)
    additional_fields: dict[str, tuple[str, ...]] = field(default_factory=dict)
    include: tuple[str, ...] = ()
    account: str = ""
    origin: str = ""


class Page:
    """One page of JSON:API resource objects (dicts with type, id, attributes, relationships, links).

    The store may hand `data` over already serialized, as the JSON array's bytes (its fast path for
    big pages of events): the HTTP layer embeds those as they are, and `data` parses them only when
    something wants the dicts (tests, the malformed-record fault).
    """

    __slots__ = ("_data", "_json", "included", "next_cursor", "prev_cursor")

    def __init__(self, data: list[dict[str, Any]] | bytes, included: list[dict[str, Any]] | None = None,
                 next_cursor: str | None = None, prev_cursor: str | None = None) -> None:
        self._data: list[dict[str, Any]] | None = None if isinstance(data, bytes) else data
        self._json: bytes | None = data if isinstance(data, bytes) else None
        self.included = included if included is not None else []
        self.next_cursor = next_cursor
        self.prev_cursor = prev_cursor  # the page before this one, None on a first page

    @property
    def data(self) -> list[dict[str, Any]]:
        if self._data is None:
            self._data = orjson.loads(self._json or b"[]")
        return self._data

    @property
    def data_json(self) -> bytes:
        """`data` as a JSON array, byte for byte what `orjson.dumps(data)` gives."""
        return orjson.dumps(self._data) if self._json is None else self._json


class StoreError(Exception):
    """A request the store cannot answer; the HTTP layer renders it as a JSON:API error."""

    def __init__(self, status: int, code: str, detail: str, parameter: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.parameter = parameter
