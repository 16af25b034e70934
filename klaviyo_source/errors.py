"""The errors users see. Each message is one line that says what went wrong and what to do."""

from __future__ import annotations


class KlaviyoSourceError(Exception):
    """Base class: an expected failure with a message fit to print as is (no traceback needed)."""


class ConfigurationError(KlaviyoSourceError, ValueError):
    """A source argument is wrong; the message names the argument and how to fix it."""


class KlaviyoAPIError(KlaviyoSourceError):
    """Klaviyo answered with an error, or kept failing after retries.

    Carries the endpoint path (never the full URL with query or the key), the HTTP status and
    Klaviyo's own error detail from the JSON:API error envelope.
    """

    hint = ""

    def __init__(self, endpoint: str, status: int | None, detail: str, code: str = "") -> None:
        detail = " ".join(detail.split())  # one line, whatever the server sent
        self.endpoint = endpoint
        self.status = status
        self.detail = detail
        self.code = code
        where = f"Klaviyo {endpoint}"
        what = f"HTTP {status}" if status else "no answer"
        code_part = f" [{code}]" if code else ""
        hint = f" {self.hint}" if self.hint else ""
        super().__init__(f"{where}: {what}{code_part}: {detail}.{hint}".replace("..", "."))


class AuthenticationError(KlaviyoAPIError):
    hint = (
        "Check the private API key in .dlt/secrets.toml [sources.klaviyo] api_key or "
        "SOURCES__KLAVIYO__API_KEY; it may be wrong or revoked."
    )


class MissingScopeError(KlaviyoAPIError):
    """The key lacks a scope an endpoint needs (403)."""

    def __init__(self, endpoint: str, status: int, detail: str, code: str, table: str, scopes: tuple[str, ...]):
        self.table = table
        self.scopes = scopes
        self.hint = (
            f"The key needs scope(s) {', '.join(scopes)} for table '{table}': add them to the key in Klaviyo, "
            "or leave the table out (resources=...), or pass skip_forbidden=True to load the others."
        )
        super().__init__(endpoint, status, detail, code)


class ThrottledUntilError(KlaviyoAPIError):
    """Klaviyo throttled with a Retry-After too long to wait for in a run (a daily cap is used up)."""

    def __init__(self, endpoint: str, status: int, detail: str, code: str, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(endpoint, status, detail, code)


class RevisionError(KlaviyoAPIError):
    hint = "Klaviyo rejected the revision header: pass a revision Klaviyo supports (default 2026-07-15)."


class InvalidRecordError(KlaviyoAPIError):
    """A page kept holding a record that cannot be loaded (no id, a value of the wrong type), in strict mode,
    or an answer that was no list of records at all."""

    hint = (
        "Nothing of this run was loaded and no cursor moved: run again later, leave the table out "
        "(resources=...), or run without strict so such records are set aside in table set_aside_records."
    )


class RunCancelled(Exception):
    """A table stopped because another table of the same run failed for good (its error is `__cause__`).

    Not a KlaviyoSourceError: whoever reports the run's failure reports the cause, never this.
    """

    def __init__(self, cause: BaseException | None) -> None:
        super().__init__(f"stopped because another table failed: {cause}")
        self.__cause__ = cause
