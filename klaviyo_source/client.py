"""HTTP to Klaviyo: auth and revision headers, the rate governor, retries, JSON:API paging, errors.

dlt's RESTClient covers paging and retries for ordinary APIs; Klaviyo needs each *attempt* (retries
included) to pass through a rate governor shared by all threads of an endpoint, 429 handled as a pause of
that whole endpoint rather than a per-request retry, bodies that must be JSON:API (a truncated or
non-JSON body is retried, never read as an empty page), and errors carrying Klaviyo's own detail. That
is most of what a client does, so this is a small client of our own on a pooled `requests.Session`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import orjson
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from klaviyo_source.concurrency import Cancel
from klaviyo_source.errors import (
    AuthenticationError,
    InvalidRecordError,
    KlaviyoAPIError,
    RevisionError,
    ThrottledUntilError,
)
from klaviyo_source.rate_limit import Governor
from klaviyo_source.rows import OBJECT, parse_lazy
from klaviyo_source.validate import CheckedPage, InvalidPage

log = logging.getLogger("klaviyo_source")

RETRY_STATUSES = frozenset({500, 502, 503, 504, 520, 522, 524})
# Transient transport failures: refused or reset connections, timeouts, bodies cut short or garbled.
# Other RequestExceptions (a malformed URL, too many redirects) would fail the same way on every try.
TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)

Document = Any  # a JSON:API document: a simdjson.Object (rows.parse_lazy), or dicts
# Turns a document into checked tables; raises InvalidPage for a page that is not a list of records.
PageCheck = Callable[[Document], CheckedPage]
# Parses a body; raises ValueError if it is not JSON (orjson's and pysimdjson's errors both are).
Decode = Callable[[bytes], Any]


class Page(NamedTuple):
    """One answer: its tables and misfits (when the request had a check) or else the document as parsed, and
    the link to the next page.

    A checked page keeps no reference to its parsed document: a parsed page holds about three times its JSON
    (measured: 2.4 MB for a 0.8 MB page of events), and every chain paused between two pages would keep one.
    """

    document: Document | None
    checked: CheckedPage | None
    next: str | None


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with jitter for 5xx, resets, timeouts, broken bodies and invalid pages.

    The jitter keeps threads that failed together from retrying together; its floor (half the step)
    keeps a retry from following its failure at once. With the defaults a request is given up after
    about a minute of failures, long enough for a blip, short enough for a scheduled job to report.
    When Klaviyo cannot be reached at all (no connection, no DNS), the client gives up once it has been
    unreachable for `unreachable_budget` seconds in total, whichever request is retrying: a run with no
    network fails in well under a minute instead of letting each table exhaust its own attempts.
    """

    attempts: int = 8
    base: float = 0.5
    cap: float = 30.0
    max_throttles: int = 30  # 429s on one request before giving up
    max_retry_after: float = 300.0  # a longer Retry-After (a daily cap) fails the run instead of sleeping
    unreachable_budget: float = 30.0

    def delay(self, attempt: int) -> float:
        step = min(self.cap, self.base * 2**attempt)
        return random.uniform(step / 2, step)


DEFAULT_RETRY = RetryPolicy()
# A retry is logged at once the first time, then at most once per this many seconds per kind of problem
# (with the count of retries since): 19 tables retrying an outage wrote 80 warnings in a minute.
NOTICE_EVERY = 5.0


class _Notices:
    """Retry messages at a pace a log reader can follow: one line per kind of problem every NOTICE_EVERY s."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, int]] = {}

    def log(self, level: int, kind: str, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            last, held = self._last.get(kind, (-NOTICE_EVERY, 0))
            if now - last < NOTICE_EVERY:
                self._last[kind] = (last, held + 1)
                return
            self._last[kind] = (now, 0)
        more = f" (and {held} more like it since the last such line)" if held else ""
        log.log(level, "%s%s", message, more)


# Reading, decompressing, parsing and checking a page is CPU work, mostly under the GIL. Threads that
# interleave it all hold a page half read or half parsed at the same moment (measured: 100 events pages in
# flight at no latency held 3.3 MB each, 400 MB in all), a hundred threads reading sockets chunk by chunk
# between parses make every answer look seconds slow, and each thread that allocates large buffers makes
# the C allocator keep an arena of its own (measured: 440 MB instead of 260 MB for 200k events). So pages
# are decoded on two threads of their own, one page each at a time (two: their GIL-free moments,
# decompression and socket reads, are still used). One pair for the process: the CPU is shared by every
# endpoint and source.
DECODERS = 2
DECODER = ThreadPoolExecutor(DECODERS, thread_name_prefix="page-decoder")


class KlaviyoClient:
    """Sends GETs to Klaviyo; thread-safe, one per source run.

    `cancel` is the run's stop signal: once set, every request, retry wait and rate-limit wait of this
    client ends at once with RunCancelled. `requests` and `throttled` count attempts and 429s per endpoint.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str,
        revision: str,
        timeout: tuple[float, float] = (10.0, 60.0),
        retry: RetryPolicy | None = None,
        cancel: Cancel | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._host = urlsplit(self.base_url).netloc
        self.timeout = timeout
        self.retry = retry or DEFAULT_RETRY
        self.cancel = cancel or Cancel()
        self.requests: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._notices = _Notices()
        self._unreachable_since: float | None = None
        self._flying = 0
        self.pool_size = 1
        self.session = requests.Session()
        self._adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self.pool_size)
        self.session.mount("http://", self._adapter)
        self.session.mount("https://", self._adapter)
        # The key lives only in this header: never in a URL, a log line or an exception.
        self.session.headers.update(
            {
                "Authorization": f"Klaviyo-API-Key {api_key}",
                "revision": revision,
                "Accept": "application/vnd.api+json",
            }
        )

    def _in_use(self, delta: int) -> None:
        """Counts connections in use (a request in flight, or an answer whose body waits in its socket); the
        pool grows to hold one for each, so none is discarded ("Connection pool is full") however many
        chains the pace or the parents fan out to."""
        with self._lock:
            self._flying += delta
            if self._flying > self.pool_size:
                self._grow(max(self._flying, 2 * self.pool_size))

    def _send(self, url: str, params: Mapping[str, str] | None, data: bytes | None = None) -> requests.Response:
        """A GET (a POST of `data`: a report query) whose body, for a page, is read when it is its turn to be
        decoded (see `_decode`): till then it waits in the socket, not in our memory, and its connection stays
        in use (`_in_use`). Error answers are short: read at once, their connection goes back to the pool."""
        self._in_use(+1)
        try:
            if data is None:
                response = self.session.get(url, params=params, timeout=self.timeout, stream=True)
            else:
                response = self.session.post(url, params=params, data=data, timeout=self.timeout, stream=True,
                                             headers={"Content-Type": "application/vnd.api+json"})
            if response.status_code != 200:
                _ = response.content
        except BaseException:
            self._in_use(-1)
            raise
        if response.status_code != 200:
            self._in_use(-1)
        return response

    def _grow(self, size: int) -> None:
        """A larger pool in the same adapter (remounting would race with threads looking adapters up). The old
        pool manager is cleared: its idle connections close, and those in use close when they come back."""
        old = self._adapter.poolmanager
        self.pool_size = size
        self._adapter.init_poolmanager(1, size)
        old.clear()

    def pages(
        self,
        path: str,
        params: Mapping[str, str],
        governor: Governor,
        label: str,
        check: PageCheck | None = None,
        decode: Decode | None = None,
        body: Any = None,
    ) -> Iterator[Page]:
        """Yields every page of a collection, following `links.next` to its end.

        `check` turns a document into tables; a page with misfits is requested again (see `get`).
        `decode` parses a body (default rows.parse_lazy: lazily, or exactly where that cannot be lazy).
        `body`: POST this JSON:API document to every page instead of GETting it (the reporting endpoints).
        """
        url: str | None = self.base_url + path
        query: Mapping[str, str] | None = params
        while url:
            page = self.get(url, query, governor, label, check, decode, body)
            url = page.next
            yield page
            del page  # not kept while this chain waits for its next turn
            query = None  # links.next already carries the original query
            if url and urlsplit(url).netloc != self._host:
                # Following it would send the key to another host.
                raise KlaviyoAPIError(label, None, f"links.next points to another host ({urlsplit(url).netloc})")

    def post(self, path: str, body: Mapping[str, object], governor: Governor, label: str) -> Document:
        """One JSON:API POST that reads (metric aggregates): retried and checked like a GET."""
        return self.get(self.base_url + path, None, governor, label, decode=orjson.loads, body=body).document

    def get(
        self,
        url: str,
        params: Mapping[str, str] | None,
        governor: Governor,
        label: str,
        check: PageCheck | None = None,
        decode: Decode | None = None,
        body: Any = None,
    ) -> Page:
        """One page, retried as Klaviyo's guidance says; raises KlaviyoAPIError with Klaviyo's detail.

        A page whose records do not all fit is asked for once more: a glitch usually clears. An answer that
        fails the same check twice will not change for retrying, so it is returned with its misfits (the
        caller sets them aside, or fails in strict mode) instead of being retried for another minute.
        With `body`, the request is a POST of that document (a report query: it changes nothing, so it is
        retried like a GET).
        """
        attempt = throttles = 0
        failed: tuple[Any, ...] | None = None
        decode = decode or parse_lazy
        data = None if body is None else orjson.dumps(body)
        while True:
            self.cancel.check()
            governor.acquire(self.cancel.sleep)
            wire, sent = governor.sent(), time.monotonic()
            with self._lock:
                self.requests[label] += 1
            try:
                response = self._send(url, params, data)
            except TRANSIENT as exc:
                governor.returned(None, wire)
                unreachable = _unreachable(exc)
                attempt = self._backoff(attempt, label, _transport_problem(exc), unreachable=unreachable)
                continue
            self._unreachable_since = None  # Klaviyo answered
            status = response.status_code
            # the pace of the endpoint: the time to a page's answer
            governor.returned(time.monotonic() - sent if status == 200 else None, wire)
            if status == 429:
                throttles += 1
                with self._lock:
                    self.throttled[label] += 1
                wait = _retry_after(response.headers.get("Retry-After"), self.retry.delay(min(throttles, 6)))
                if wait > self.retry.max_retry_after:
                    # A daily cap (the reporting endpoints): say so, and when to come back, instead of sleeping
                    # for hours; the report tables defer their timeframes on it, other tables fail the run.
                    back = datetime.now(timezone.utc) + timedelta(seconds=wait)
                    detail = (f"{_error_detail(response)[1]} (Klaviyo asks to wait {wait:,.0f} s, longer than the "
                              f"{self.retry.max_retry_after:.0f} s a run waits: a daily cap? run again after "
                              f"{back:%Y-%m-%d %H:%M} UTC)")
                    raise ThrottledUntilError(label, 429, detail, "throttled", wait)
                if throttles > self.retry.max_throttles:
                    detail = f"{_error_detail(response)[1]} (still throttled after waiting {throttles - 1} times)"
                    raise KlaviyoAPIError(label, 429, detail, "throttled")
                message = f"{label}: throttled by Klaviyo, all requests to it wait {wait:.1f} s"
                self._notices.log(logging.INFO, f"429 {label}", message)
                governor.throttled(wait)
                continue
            if status in RETRY_STATUSES:
                attempt = self._backoff(attempt, label, _error_detail(response)[1], status)
                continue
            if status >= 400:
                raise self._error(response, label)
            document, checked, problem = _decode(response, governor, decode, check, self._in_use)
            if problem is not None:  # backed off outside the gate: others decode meanwhile
                attempt = self._backoff(attempt, label, problem[0], status, problem[1])
                continue
            if (checked is not None and checked.misfits and checked.signature() != failed
                    and attempt + 1 < self.retry.attempts):
                failed = checked.signature()
                attempt = self._backoff(attempt, label, checked.describe(), status, InvalidRecordError)
                continue
            governor.observe(response.headers)
            link = (document.get("links") or {}).get("next")
            return Page(None if checked is not None else document, checked, str(link) if link else None)

    def _backoff(
        self,
        attempt: int,
        label: str,
        problem: str,
        status: int | None = None,
        error: type[KlaviyoAPIError] = KlaviyoAPIError,
        unreachable: bool = False,
    ) -> int:
        """Sleeps before the next attempt, or raises `error` once the attempts (or the time budget for an
        unreachable Klaviyo) are used up; raises RunCancelled at once if the run was cancelled meanwhile."""
        self.cancel.check()  # another table failed: this failure is not worth a retry or a line
        problem = problem.rstrip(". ")
        delay = self.retry.delay(attempt)
        if unreachable:  # only the time budget counts: the last retry falls on its end
            now = time.monotonic()
            with self._lock:
                since = self._unreachable_since = self._unreachable_since or now
            left = self.retry.unreachable_budget - (now - since)
            if left <= 0:
                raise error(label, status, f"{problem} to {self._host} for {now - since:.0f} s; check this "
                                           "machine's network, proxy and the base_url")
            delay = min(delay, left)
        elif attempt + 1 >= self.retry.attempts:
            raise error(label, status, f"{problem}; gave up after {attempt + 1} attempts")
        answered = f"HTTP {status}: " if status else ""
        message = f"{label}: {answered}{problem}; retry {attempt + 1} in {delay:.2f} s"
        self._notices.log(logging.WARNING, f"{answered}{problem}", message)
        self.cancel.sleep(delay)
        return attempt + 1

    def _error(self, response: requests.Response, label: str) -> KlaviyoAPIError:
        code, detail = _error_detail(response)
        status = response.status_code
        if status == 401:
            return AuthenticationError(label, status, detail, code)
        if status == 410 or (status == 400 and "revision" in detail.lower()):
            return RevisionError(label, status, detail, code)
        return KlaviyoAPIError(label, status, detail, code)


def _decode(
    response: requests.Response, governor: Governor, decode: Decode, check: PageCheck | None,
    in_use: Callable[[int], None],
) -> tuple[Document, CheckedPage | None, tuple[str, type[KlaviyoAPIError]] | None]:
    """On a DECODER thread: the rest of the body read (and decompressed), parsed and checked; see `_read`.

    While it waits for a decoder, the answer counts as in hand for its endpoint (Governor.hold).
    """

    def receive() -> tuple[Document, CheckedPage | None, tuple[str, type[KlaviyoAPIError]] | None]:
        governor.hold(-1)
        started = time.monotonic()
        try:
            body = response.content
        except TRANSIENT as exc:
            return None, None, (_transport_problem(exc), KlaviyoAPIError)
        finally:
            in_use(-1)  # read (or broken): the connection is back in the pool
        governor.sized(len(body))
        read = _read(body, decode, check)
        governor.decoded(time.monotonic() - started)
        return read

    governor.hold(+1)
    return DECODER.submit(receive).result()


def _read(
    body: bytes, decode: Decode, check: PageCheck | None
) -> tuple[Document, CheckedPage | None, tuple[str, type[KlaviyoAPIError]] | None]:
    """The body parsed and checked into tables, or what is wrong with it (the page is then asked for again)."""
    try:
        document = decode(body)
    except ValueError:
        return None, None, ("body is not valid JSON (cut short?)", KlaviyoAPIError)
    if not isinstance(document, OBJECT) or "data" not in document:
        return None, None, ("body is not a JSON:API document", KlaviyoAPIError)
    if check is None:
        return document, None, None
    try:
        return document, check(document), None
    except InvalidPage as exc:
        return None, None, (str(exc), InvalidRecordError)


def _transport_problem(exc: requests.RequestException) -> str:
    """What went wrong on the wire, in words; never the exception text, which repeats the whole URL."""
    if _unreachable(exc):
        return "could not connect"
    if isinstance(exc, requests.Timeout):
        return "no answer in time (timeout)"
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
        return "body cut short or garbled"
    if any(isinstance(arg, ConnectionResetError) for arg in _causes(exc)):
        return "connection reset"
    return "connection dropped"


CONNECT_FAILURES = (NewConnectionError, ConnectTimeoutError)  # refused, no route, no DNS; connect timeout


def _unreachable(exc: requests.RequestException) -> bool:
    """No connection could be made at all (refused, no route, no DNS, connect timeout), as opposed to one
    that broke mid-answer: only these count against the unreachable budget."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if not isinstance(exc, requests.ConnectionError):
        return False
    # requests wraps urllib3's MaxRetryError, whose `reason` (not in its args) is the connect failure
    return any(isinstance(c, NewConnectionError) or isinstance(getattr(c, "reason", None), CONNECT_FAILURES)
               for c in _causes(exc))


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what it wraps (requests nests urllib3's errors in `args`), a few levels deep."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return
        yield seen
        nested = [a for a in seen.args if isinstance(a, BaseException)]
        seen = nested[0] if nested else (seen.__cause__ or seen.__context__)


def _retry_after(value: str | None, fallback: float) -> float:
    """Klaviyo sends whole seconds; anything else falls back to jittered backoff."""
    try:
        return max(0.0, float(value)) if value is not None else fallback
    except ValueError:
        return fallback


def _error_detail(response: requests.Response) -> tuple[str, str]:
    """(code, detail) from Klaviyo's JSON:API error envelope, or a short excerpt of a non-JSON body."""
    try:
        errors = orjson.loads(response.content).get("errors") or []
        first = errors[0]
        detail = first.get("detail") or first.get("title") or ""
        parameter = (first.get("source") or {}).get("parameter")
        if parameter:
            detail = f"{detail} (parameter {parameter})"
        return str(first.get("code") or ""), detail
    except (orjson.JSONDecodeError, AttributeError, IndexError, TypeError):
        text = response.text[:200].strip().replace("\n", " ")
        return "", text or response.reason or "no detail"
