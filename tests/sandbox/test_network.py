"""The sandbox's network: gzip when asked, latency that grows with the answer, requests in flight counted."""

from __future__ import annotations

import gzip
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from klaviyo_source.sandbox import Sandbox
from klaviyo_source.sandbox.network import Network
from tests.sandbox.conftest import SMALL_SIZES, Client


@pytest.fixture(scope="module")
def sb() -> Iterator[Sandbox]:
    with Sandbox(seed=3, rate_limits="off", **SMALL_SIZES) as sandbox:
        yield sandbox


def raw(client: Client, path: str, encoding: str) -> Any:
    """The answer as it came over the wire (requests leaves the body compressed with stream=True)."""
    response = client.session.get(client.sb.base_url + path, headers={**client.headers, "Accept-Encoding": encoding},
                                  stream=True)
    return response, response.raw.read(decode_content=False)


def test_answers_are_gzipped_only_when_the_client_asks(sb: Sandbox) -> None:
    client = Client(sb)
    zipped, body = raw(client, "/events?page[size]=100", "gzip, deflate")
    assert zipped.headers["Content-Encoding"] == "gzip"
    plain, plain_body = raw(client, "/events?page[size]=100", "identity")
    assert "Content-Encoding" not in plain.headers
    assert gzip.decompress(body) == plain_body and len(body) < len(plain_body) / 3
    # a client like the connector's (requests) decompresses transparently
    assert client.get("/events", {"page[size]": "100"}).json()["data"]


def test_latency_grows_with_the_size_of_the_answer(sb: Sandbox) -> None:
    client = Client(sb)
    sb.configure(latency=0.0, latency_per_mb=4.0)
    try:
        small = client.get("/events", {"page[size]": "1"})
        started = time.perf_counter()
        large = client.get("/events", {"page[size]": "200"})
        large_time = time.perf_counter() - started
    finally:
        sb.configure(latency_per_mb=0.0)
    assert small.status_code == large.status_code == 200
    assert large_time >= 4.0 * len(large.content) / 1e6  # 4 s per MB of the (uncompressed) answer
    assert len(large.content) > 50 * len(small.content)


def test_requests_in_flight_are_counted(sb: Sandbox) -> None:
    sb.configure(latency=1.0)
    sb.reset_stats()
    together = threading.Barrier(4)

    def send() -> None:
        client = Client(sb)
        together.wait()
        client.get("/tags")

    try:
        threads = [threading.Thread(target=send) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sb.configure(latency=0.0)
    stats = sb.stats()
    assert stats["inflight_peak"] == 4 and 2 <= stats["inflight_mean"] <= 4


def test_a_client_that_hangs_up_is_no_error_of_the_sandbox(sb: Sandbox, capfd: pytest.CaptureFixture[str]) -> None:
    """A run killed mid-request (the soak test kills hundreds) left a traceback on the sandbox's stderr for every
    answer it had in flight; such a hang-up is the client's doing, and only real errors are printed."""
    host, port = sb.base_url.split("//")[1].split("/")[0].split(":")
    sb.configure(latency=0.3)
    try:
        for _ in range(3):
            with socket.create_connection((host, int(port))) as conn:
                conn.sendall(f"GET /api/tags HTTP/1.1\r\nHost: {host}\r\nAuthorization: Klaviyo-API-Key "
                             f"{sb.api_key}\r\nrevision: 2026-07-15\r\n\r\n".encode())
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
        time.sleep(0.8)  # the answers are written to the closed connections
    finally:
        sb.configure(latency=0.0)
    err = capfd.readouterr().err
    assert "ConnectionResetError" not in err and "BrokenPipeError" not in err, err
    assert Client(sb).get("/tags").status_code == 200  # and it goes on serving


def test_settings_are_checked_and_reported() -> None:
    network = Network(latency=0.5, latency_per_mb=0.25)
    assert network.settings() == {"latency": 0.5, "latency_per_mb": 0.25, "gzip": True}
    with pytest.raises(ValueError):
        network.configure(latency_per_mb=-1)
    network.configure(gzip_answers=False)
    assert network.encode(b"x" * 5000, "gzip") == (b"x" * 5000, {})
