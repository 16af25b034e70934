"""The sandbox's HTTP layer: a threaded HTTP/1.1 server that answers like Klaviyo's /api.

Per request: faults and latency, routing, auth (key + scopes), revision header, rate limits, validation
against the spec rules, then the store's answer rendered as JSON:API with orjson, gzip-compressed when the
client asks (network.py). `/__admin/` is a small
control API for tests and benchmarks (no Klaviyo auth, loopback only).
"""

from __future__ import annotations

import secrets
import socket
import struct
import sys
import threading
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson

from klaviyo_source.sandbox import aggregates
from klaviyo_source.sandbox.faults import PRE_KINDS, Faults, malform
from klaviyo_source.sandbox.limits import RateLimiter, retry_after_detail
from klaviyo_source.sandbox.model import StoreError
from klaviyo_source.sandbox.network import Network
from klaviyo_source.sandbox.rules import ApiError, Route, Rules

JSON_API = "application/vnd.api+json"
KEY_PREFIX = "pk_sandbox_"
LOOPBACK = ("127.0.0.1", "::1", "localhost")
MAX_BODY = 1 << 20  # a larger request body is refused (the reporting POSTs send a few hundred bytes)
_REASONS = {
    200: "OK",
    400: "Bad Request",
    413: "Content Too Large",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_TITLES = {
    400: "Invalid input.",
    404: "Not found.",
    409: "Conflict.",
    500: "A server error occurred.",
    502: "Bad gateway.",
    503: "Service unavailable.",
    504: "Gateway timeout.",
}


def new_key() -> str:
    """A private-key look-alike that is easy to recognise as a sandbox key."""
    return KEY_PREFIX + secrets.token_hex(16)


@dataclass(frozen=True)
class KeyInfo:
    account: str
    scopes: frozenset[str]


class Stats:
    """Request counts per (method, path template, status), plus 429s and fired faults."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests: Counter[tuple[str, str, int]] = Counter()
            self.faults: Counter[str] = Counter()

    def count(self, method: str, template: str, status: int) -> None:
        with self._lock:
            self.requests[(method, template, status)] += 1

    def fault(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            rows = [{"method": m, "path": p, "status": s, "count": n} for (m, p, s), n in sorted(self.requests.items())]
            return {
                "total": sum(self.requests.values()),
                "throttled": sum(n for (_, _, s), n in self.requests.items() if s == 429),
                "requests": rows,
                "faults": dict(self.faults),
            }


class SandboxServer:
    """The Klaviyo simulator bound to a (thread-safe) store; `start()` serves from a daemon thread."""

    def __init__(
        self,
        store: Any,
        account: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limits: Any = "real",
        latency: float = 0.0,
        latency_per_mb: float = 0.0,
        faults: list[dict[str, Any]] | None = None,
        seed: int = 0,
        api_key: str | None = None,
    ) -> None:
        self.store = store
        self.account = account
        self.rules = Rules()
        self.limiter = RateLimiter(rate_limits)
        self.faults = Faults(seed=seed, faults=faults)
        self.network = Network(latency=latency, latency_per_mb=latency_per_mb)
        self.stats = Stats()
        self.api_key = api_key or new_key()
        self._keys = {self.api_key: KeyInfo(account, frozenset(self.rules.all_scopes))}
        self._keys_lock = threading.Lock()
        self.httpd = _HTTPServer((host, port), _Handler)
        self.httpd.sandbox = self
        self._thread: threading.Thread | None = None
        bound_host, bound_port = self.httpd.server_address[:2]
        self.origin = f"http://{bound_host!s}:{bound_port}"

    @property
    def base_url(self) -> str:
        return self.origin + "/api"

    def create_key(self, scopes: list[str]) -> str:
        key = new_key()
        with self._keys_lock:
            self._keys[key] = KeyInfo(self.account, frozenset(scopes))
        return key

    def key_info(self, key: str) -> KeyInfo | None:
        with self._keys_lock:
            return self._keys.get(key)

    def configure(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Apply {latency?, latency_per_mb?, gzip?, rate_limits?, faults?}; answer the resulting settings."""
        unknown = set(settings) - {"latency", "latency_per_mb", "gzip", "rate_limits", "faults"}
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}")
        if "rate_limits" in settings:
            self.limiter.configure(settings["rate_limits"])
        self.network.configure(settings.get("latency"), settings.get("latency_per_mb"), settings.get("gzip"))
        self.faults.configure(faults=settings.get("faults"))
        return {**self.network.settings(), **self.faults.settings(), "rate_limits": self.limiter.mode}

    def start(self) -> SandboxServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="klaviyo-sandbox", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    sandbox: SandboxServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up before its answer was written (a killed run, a timeout) is not the sandbox's
        error: not printed. Anything else is, with its traceback, as socketserver prints it."""
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


def error_body(status: int, code: str, title: str, detail: str, parameter: str | None = None) -> bytes:
    error: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "status": status,
        "code": code,
        "title": title,
        "detail": detail,
    }
    if parameter:
        error["source"] = {"parameter": parameter}
    return orjson.dumps({"errors": [error]})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _HTTPServer
    head_only = False  # answering a HEAD: headers only

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: request lines would be noise (and headers may carry keys)."""

    def do_GET(self) -> None:
        self.dispatch("GET")

    def do_POST(self) -> None:
        self.dispatch("POST")

    def do_PUT(self) -> None:
        self.dispatch("PUT")

    def do_PATCH(self) -> None:
        self.dispatch("PATCH")

    def do_DELETE(self) -> None:
        self.dispatch("DELETE")

    def do_HEAD(self) -> None:
        """Answered as the GET would be, without its body."""
        self.head_only = True
        try:
            self.dispatch("GET")
        finally:
            self.head_only = False

    def __getattr__(self, name: str) -> Callable[[], None]:
        """Any other method (OPTIONS, TRACE, made-up ones) gets Klaviyo's 405 or 404, not the stdlib's 501."""
        if name.startswith("do_"):
            return lambda: self.dispatch(name[3:])
        raise AttributeError(name)

    @property
    def sandbox(self) -> SandboxServer:
        return self.server.sandbox

    def dispatch(self, method: str) -> None:
        declared = (self.headers.get("Content-Length") or "0").strip()
        if not declared.isascii() or not declared.isdigit() or int(declared) > MAX_BODY:
            # the body cannot be read (or skipped) safely: answer and close the connection
            self.close_connection = True
            status = 413 if declared.isascii() and declared.isdigit() else 400
            detail = f"The Content-Length header {declared[:40]!r} is not acceptable."
            self.send(status, error_body(status, "invalid", _TITLES[400], detail), {"Connection": "close"})
            return
        length = int(declared)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        if path == "/api" or path.startswith("/api/"):
            self.handle_api(method, path, url.query, body)
        elif path.startswith("/__admin/"):
            self.handle_admin(method, path[len("/__admin/") :], url.query, body)
        else:
            self.send(404, error_body(404, "not_found", "Not found.", f"The path {path} could not be found."))

    # --- /api ---------------------------------------------------------------------------------------

    def handle_api(self, method: str, path: str, query_string: str, body: bytes) -> None:
        """Answer one /api request; stats are counted before the answer leaves, so clients see them."""
        sb = self.sandbox
        sb.network.arrive()
        try:
            self.answer_api(method, path, query_string, body)
        finally:
            sb.network.leave()

    def answer_api(self, method: str, path: str, query_string: str, body: bytes) -> None:
        sb = self.sandbox
        template = path
        headers: dict[str, str] = {}
        counted: dict[str, str] = {}  # RateLimit-* of a request the limiter counted, sent with any answer
        truncate = False
        try:
            fired = sb.faults.roll(path)
            post_faults = []
            for fault in fired:
                sb.stats.fault(fault.kind)
                if fault.kind == "reset":
                    sb.stats.count(method, template, 0)
                    self.reset_connection()
                    return
                if fault.kind in PRE_KINDS:
                    raise ApiError(
                        fault.status, "error", _TITLES.get(fault.status, "Server error."), "An injected fault occurred."
                    )
                post_faults.append(fault)
            route = sb.rules.route(method, path[len("/api") :])
            template = "/api" + route.template
            params = parse_qsl(query_string, keep_blank_values=True)
            account, revision = self.authorize(route)
            route = sb.rules.at(route, revision)
            headers = counted = self.rate_limit(route, account, params)
            payload = self.answer(route, params, body, account, post_faults)
            status = 200
            truncate = any(f.kind == "truncate" for f in post_faults)
        except ApiError as err:
            status, headers = err.status, {**counted, **err.headers}
            payload = error_body(status, err.code, err.title, err.detail, err.parameter)
        except StoreError as err:
            status, headers = err.status, counted
            payload = error_body(status, err.code, _TITLES.get(status, "Error."), err.detail, err.parameter)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            status = 500
            payload = error_body(500, "error", _TITLES[500], "Internal error.")
        sb.network.produce(len(payload))
        payload, encoding = sb.network.encode(payload, self.headers.get("Accept-Encoding"))
        sb.stats.count(method, template, status)
        self.send(status, payload, {**headers, **encoding}, truncate=truncate)

    def authorize(self, route: Route) -> tuple[str, date]:
        """401 without a valid key, 400 for a bad revision, 403 when the key lacks a scope; the account and
        the revision the request is answered under."""
        header = self.headers.get("Authorization") or ""
        scheme, _, key = header.partition(" ")
        info = self.sandbox.key_info(key.strip()) if scheme == "Klaviyo-API-Key" else None
        if info is None:
            raise ApiError(
                401,
                "not_authenticated",
                "Authentication credentials were not provided.",
                "Missing or invalid private key.",
            )
        revision = self.sandbox.rules.check_revision(self.headers.get("revision"))
        missing = sorted(set(route.rule["scopes"]) - info.scopes)
        if missing:
            raise ApiError(
                403,
                "permission_denied",
                "You do not have permission to perform this action.",
                f"This API key is missing required scopes: {', '.join(missing)}.",
            )
        return info.account, revision

    def rate_limit(self, route: Route, account: str, params: list[tuple[str, str]]) -> dict[str, str]:
        """Count the request against its tier; raise the 429 when over."""
        tier, limits = "default", route.rule["rate"]
        for name, reduced in route.rule.get("reduced_tiers", {}).items():
            rtype, value = name.split(".", 1)
            requested = (v for k, v in params if k == f"additional-fields[{rtype}]")
            if any(value in v.split(",") for v in requested):
                tier, limits = name, reduced
        decision = self.sandbox.limiter.check(account, route.template, tier, limits)
        if not decision.allowed:
            detail = retry_after_detail(decision.headers)
            raise ApiError(429, "throttled", "Request was throttled.", detail, headers=decision.headers)
        return decision.headers

    def answer(
        self, route: Route, params: list[tuple[str, str]], body: bytes, account: str, post_faults: list[Any]
    ) -> bytes:
        sb = self.sandbox
        self_url = sb.origin + self.path
        if route.method == "POST":
            if route.rule["type"] == aggregates.TYPE:
                return aggregates.answer(sb.store, route.rule, params, body, self_url)
            attributes = sb.rules.report_attributes(route, params, body)
            report = sb.store.report(route.rule["type"], attributes, dict(params).get("page_cursor"))
            pages = {"self": self_url}
            if report.next_cursor is not None:
                also = [(k, v) for k, v in params if k != "page_cursor"] + [("page_cursor", report.next_cursor)]
                pages["next"] = sb.base_url + route.template + "?" + urlencode(also)
            return orjson.dumps({"data": report.data, "links": pages})
        query = sb.rules.build_query(route, params, account, sb.origin)
        if route.rule.get("single"):
            resource, included = sb.store.detail(query)
            single: dict[str, Any] = {"data": resource, "links": {"self": self_url}}
            if query.include:
                single["included"] = included
            return orjson.dumps(single)
        page = sb.store.query(query)
        data: Any = orjson.Fragment(page.data_json)  # embedded as is: the store may have written it already
        if any(fault.kind == "malformed" for fault in post_faults):
            data = page.data
            for fault in post_faults:
                if fault.kind == "malformed" and data:
                    data = malform(data, fault, sb.faults.pick_index(len(data)))
        kept = [(k, v) for k, v in params if k != "page[cursor]"]
        collection = sb.base_url + route.template.replace("{id}", route.path_id or "")

        def link(cursor: str | None) -> str | None:
            # Klaviyo's links percent-encode everything but letters, digits and `-._~`: page%5Bcursor%5D=...
            return None if cursor is None else collection + "?" + urlencode([*kept, ("page[cursor]", cursor)])

        links = {"self": self_url, "next": link(page.next_cursor), "prev": link(page.prev_cursor)}
        doc: dict[str, Any] = {"data": data, "links": links}
        if query.include:
            doc["included"] = page.included
        return orjson.dumps(doc)

    def reset_connection(self) -> None:
        """Drop the connection with a TCP RST and no answer."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def send(
        self,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
        content_type: str = JSON_API,
        truncate: bool = False,
    ) -> None:
        """Write status line, headers and body in one write (no Nagle stalls on keep-alive)."""
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
        ]
        if truncate:
            lines.append("Connection: close")
            body = body[: len(body) // 2]
            self.close_connection = True
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head if self.head_only else head + body)

    # --- /__admin -----------------------------------------------------------------------------------

    def handle_admin(self, method: str, action: str, query_string: str, body: bytes) -> None:
        if self.client_address[0] not in LOOPBACK:
            self.send_admin(403, {"error": "the admin API answers loopback clients only"})
            return
        sb = self.sandbox
        try:
            args = orjson.loads(body) if body else {}
            result: Any
            if (method, action) == ("GET", "health"):
                result = {"status": "ok", "base_url": sb.base_url, "account": sb.account}
            elif (method, action) == ("GET", "stats"):
                result = {**sb.stats.snapshot(), **sb.network.stats()}
            elif (method, action) == ("POST", "reset-stats"):
                sb.stats.reset()
                sb.network.reset_stats()
                result = {"ok": True}
            elif (method, action) == ("POST", "configure"):
                result = sb.configure(args)
            elif (method, action) == ("POST", "mutate"):
                op = args.pop("op")
                result = sb.store.mutate(op, **args)
            elif (method, action) == ("GET", "ground-truth-versions"):
                result = sb.store.versions()
            elif (method, action) == ("GET", "ground-truth"):
                until = dict(parse_qsl(query_string)).get("until")
                result = sb.store.ground_truth(parse_until(until) if until else None)
            elif (method, action) == ("POST", "report"):
                result = sb.store.report_results(args["type"], args["attributes"])
            elif (method, action) == ("POST", "keys"):
                result = {"key": sb.create_key(list(args.get("scopes", [])))}
            else:
                self.send_admin(404, {"error": f"no admin action {method} {action}"})
                return
        except (ValueError, TypeError, KeyError, StoreError) as err:
            self.send_admin(400, {"error": f"{type(err).__name__}: {err}"})
            return
        except Exception as err:
            traceback.print_exc(file=sys.stderr)
            self.send_admin(500, {"error": f"{type(err).__name__}: {err}"})
            return
        self.send_admin(200, result)

    def send_admin(self, status: int, doc: Any) -> None:
        self.send(status, orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS), content_type="application/json")


def parse_until(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
