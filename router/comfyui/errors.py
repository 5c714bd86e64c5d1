"""Typed errors of the ComfyUI client. Every network failure of a plain call becomes one of these.

`kind` is a short machine-readable code, the same vocabulary as the failure outcomes of a run
(`router.comfyui.outcomes`), so callers can log and count both the same way.
"""

from __future__ import annotations


class ComfyUIError(Exception):
    kind: str = "error"

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class ComfyUIConnectionError(ComfyUIError):
    """Nothing answers at the URL (refused, unreachable, DNS failure, reset before a response)."""

    kind = "connection_refused"


class ComfyUITimeoutError(ComfyUIError):
    """The server accepted the connection but did not answer within the client's timeout_s."""

    kind = "timeout"


class ComfyUIHTTPError(ComfyUIError):
    """An answer with an unexpected status (5xx, 404...). `body_excerpt` keeps the start of the body."""

    kind = "http_error"

    def __init__(self, message: str, *, status: int, body_excerpt: str, url: str | None = None) -> None:
        super().__init__(message, url=url)
        self.status = status
        self.body_excerpt = body_excerpt


class ComfyUIProtocolError(ComfyUIError):
    """The answer had the expected status but not the expected shape (not JSON, missing keys)."""

    kind = "protocol_error"
