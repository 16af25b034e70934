"""A Klaviyo API simulator for tests, demos and benchmarks of the connector.

`Sandbox` runs the simulator in a thread or in a subprocess and controls it through the admin API,
so both modes behave the same:

    with Sandbox(seed=1, events=1000, profiles=100, rate_limits="off") as sb:
        requests.get(sb.base_url + "/events", headers={"Authorization": f"Klaviyo-API-Key {sb.api_key}",
                                                       "revision": "2026-07-15"})
"""

from __future__ import annotations

import dataclasses
import os
import selectors
import subprocess
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import requests

if TYPE_CHECKING:
    from klaviyo_source.sandbox.server import SandboxServer
    from klaviyo_source.sandbox.store import Sizes

__all__ = ["Sandbox"]
MODES = ("thread", "process")


class Sandbox:
    """Handle on one running simulator: URL, keys, configuration, mutations, ground truth and stats."""

    def __init__(
        self,
        seed: int = 1,
        sizes: Sizes | None = None,
        *,
        rate_limits: Any = "real",
        latency: float = 0.0,
        latency_per_mb: float = 0.0,
        faults: list[dict[str, Any]] | None = None,
        mode: str = "thread",
        anchor: datetime | None = None,
        account_id: str = "AbC123",
        startup_timeout: float = 600.0,
        **size_overrides: int,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        from klaviyo_source.sandbox.store import Sizes

        base = sizes if sizes is not None else Sizes()
        self.sizes = dataclasses.replace(base, **size_overrides)
        self.seed = seed
        self.mode = mode
        self.anchor = anchor
        self.account_id = account_id
        self.startup_timeout = startup_timeout
        self._settings: dict[str, Any] = {
            "rate_limits": rate_limits,
            "latency": latency,
            "latency_per_mb": latency_per_mb,
            "faults": faults or [],
        }
        self._server: SandboxServer | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._http = requests.Session()
        self.base_url = ""
        self.api_key = ""

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Sandbox:
        if self.mode == "thread":
            self._start_thread()
        else:
            self._start_process()
        self.configure(**self._settings)
        return self

    def _start_thread(self) -> None:
        from klaviyo_source.sandbox.server import SandboxServer
        from klaviyo_source.sandbox.store import Store

        store = Store(seed=self.seed, sizes=self.sizes, anchor=self.anchor, account_id=self.account_id)
        self._server = SandboxServer(store, self.account_id, seed=self.seed).start()
        self.base_url, self.api_key = self._server.base_url, self._server.api_key

    def _start_process(self) -> None:
        command = [sys.executable, "-m", "klaviyo_source.sandbox", "--port", "0", "--seed", str(self.seed)]
        command += ["--account-id", self.account_id, "--rate-limits", "off", "--print-key"]
        if self.anchor is not None:
            command += ["--anchor", self.anchor.isoformat()]
        for f in dataclasses.fields(self.sizes):
            command += [f"--{f.name.replace('_', '-')}", str(getattr(self.sizes, f.name))]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, env=env)
        announced = dict(line.split("=", 1) for line in self._read_lines(self._process, 2))
        self.base_url, self.api_key = announced["base_url"], announced["api_key"]

    def _read_lines(self, process: subprocess.Popen[bytes], count: int) -> list[str]:
        """The first `count` stdout lines of the child, within the startup timeout.

        Reads the pipe's file descriptor directly: a buffered reader could swallow both lines at once
        and leave the selector waiting for data that never comes.
        """
        assert process.stdout is not None
        fd = process.stdout.fileno()
        deadline = time.monotonic() + self.startup_timeout
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while buffer.count(b"\n") < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    self.stop()
                    raise TimeoutError("sandbox process did not start in time")
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise RuntimeError(f"sandbox process exited with code {process.wait()}")
                buffer += chunk
        return buffer.decode().splitlines()[:count]

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._process.stdout:
                self._process.stdout.close()
            self._process = None
        self._http.close()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The server's process id (this process in thread mode)."""
        return self._process.pid if self._process is not None else os.getpid()

    # --- admin API ---------------------------------------------------------------------------------

    def _admin(self, method: str, action: str, json: Any = None, params: dict[str, str] | None = None) -> Any:
        url = self.base_url[: -len("/api")] + "/__admin/" + action
        response = self._http.request(method, url, json=json, params=params, timeout=600)
        if response.status_code != 200:
            raise RuntimeError(f"sandbox admin {action} failed ({response.status_code}): {response.text}")
        return response.json()

    def health(self) -> dict[str, Any]:
        return self._admin("GET", "health")

    def create_key(self, scopes: list[str]) -> str:
        """A new key for the same account holding only `scopes`."""
        return self._admin("POST", "keys", {"scopes": list(scopes)})["key"]

    def configure(
        self,
        latency: float | None = None,
        rate_limits: Any = None,
        faults: list[dict[str, Any]] | None = None,
        latency_per_mb: float | None = None,
        gzip: bool | None = None,
    ) -> dict[str, Any]:
        """Change latency (s before a request arrives, plus latency_per_mb s per MB of JSON answered), rate
        limits ("real", "off", multiplier, {endpoint: (burst, steady)}), faults, gzip answers (default on).

        Arguments left as None keep their current value; `faults=[]` clears faults.
        """
        settings: dict[str, Any] = {}
        if latency is not None:
            settings["latency"] = latency
        if rate_limits is not None:
            settings["rate_limits"] = rate_limits
        if faults is not None:
            settings["faults"] = faults
        if latency_per_mb is not None:
            settings["latency_per_mb"] = latency_per_mb
        if gzip is not None:
            settings["gzip"] = gzip
        return self._admin("POST", "configure", settings)

    def clear_faults(self) -> None:
        self.configure(faults=[])

    def mutate(self, op: str, **kwargs: Any) -> dict[str, Any]:
        """Change the account's data (e.g. op="add_events"); the store defines the operations."""
        return self._admin("POST", "mutate", {"op": op, **kwargs})

    def ground_truth(self, until: datetime | None = None) -> dict[str, set[Any]]:
        """Every id per table (member tables: (parent_id, profile_id) tuples; event_attributions: whole rows,
        id, event_id, attributed_event_id, campaign_id, campaign_message_id, flow_id, flow_message_id,
        flow_message_variation_id) as of `until`."""
        params = {"until": until.isoformat()} if until is not None else None
        tables = self._admin("GET", "ground-truth", params=params)
        return {name: {tuple(i) if isinstance(i, list) else i for i in ids} for name, ids in tables.items()}

    def versions(self) -> dict[str, dict[str, Any]]:
        """Per table id -> change marker (`updated`/`updated_at`); events: id -> profile id."""
        return self._admin("GET", "ground-truth-versions")

    def report(self, kind: str, attributes: dict[str, Any]) -> dict[str, Any]:
        """What a reporting POST answers now (every page's results), without rate limits: the ground truth
        of the report tables. `kind` is the body's data.type, e.g. "flow-series-report"."""
        return self._admin("POST", "report", {"type": kind, "attributes": attributes})

    def stats(self) -> dict[str, Any]:
        return self._admin("GET", "stats")

    def reset_stats(self) -> None:
        self._admin("POST", "reset-stats")


def __getattr__(name: str) -> Any:
    """`from klaviyo_source.sandbox import Sizes, Store` without importing the store eagerly."""
    if name in ("Sizes", "Store"):
        from klaviyo_source.sandbox import store

        return getattr(store, name)
    raise AttributeError(name)
