"""The WebSocket as the execution watch needs it: connect, receive with a timeout, close.

This adapter is the only place that knows websocket-client; its exceptions become
`ComfyUIError`s (connecting) or `ChannelClosedError` (receiving), so none escapes `Execution.wait()`.
Tests and other transports can inject any `WsConnect`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

import websocket

from router.comfyui.errors import ComfyUIConnectionError, ComfyUIHTTPError, ComfyUITimeoutError

# websocket-client's recv() cannot wait less than this; a zero or negative timeout would block.
_MIN_RECV_TIMEOUT_S = 0.001


class ChannelClosedError(Exception):
    """The WebSocket is gone (closed by the server, reset, or a protocol error)."""


class WsChannel(Protocol):
    def receive(self, timeout_s: float) -> str | bytes | None:
        """The next text (str) or binary (bytes) message; None when timeout_s passes without one.

        Raises ChannelClosedError when the connection is gone."""
        ...

    def close(self) -> None: ...


WsConnect = Callable[[str, float], WsChannel]


def ws_url(base_url: str, client_id: str) -> str:
    """`http://host:8188/prefix` -> `ws://host:8188/prefix/ws?clientId=<client_id>`."""
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/") + "/ws"
    return urlunsplit((scheme, parts.netloc, path, f"clientId={quote(client_id)}", ""))


def connect_websocket(url: str, timeout_s: float) -> WsChannel:
    """Open the socket (handshake bounded by timeout_s). Raises ComfyUIError subclasses."""
    try:
        # enable_multithread: cancel()/close() may come from another thread than wait().
        # skip_utf8_validation: websocket-client checks UTF-8 in pure Python, byte by byte, which
        # was 5% of the router's Python time under load (ComfyUI broadcasts every queue change to every
        # socket); text frames are decoded with errors="replace" below instead.
        ws = websocket.create_connection(
            url, timeout=timeout_s, enable_multithread=True, skip_utf8_validation=True
        )
    except websocket.WebSocketBadStatusException as exc:
        body = exc.resp_body.decode("utf-8", "replace") if isinstance(exc.resp_body, bytes) else ""
        raise ComfyUIHTTPError(
            f"WebSocket handshake refused with HTTP {exc.status_code}",
            status=int(exc.status_code),
            body_excerpt=body[:500],
            url=url,
        ) from exc
    except (websocket.WebSocketTimeoutException, TimeoutError) as exc:
        raise ComfyUITimeoutError(f"WebSocket handshake took more than {timeout_s} s", url=url) from exc
    except (websocket.WebSocketException, OSError) as exc:
        raise ComfyUIConnectionError(f"cannot open WebSocket {url}: {exc}", url=url) from exc
    return _WebSocketClientChannel(ws)


class _WebSocketClientChannel:
    def __init__(self, ws: Any) -> None:
        self._ws = ws

    def receive(self, timeout_s: float) -> str | bytes | None:
        try:
            self._ws.settimeout(max(timeout_s, _MIN_RECV_TIMEOUT_S))
            opcode, data = self._ws.recv_data()
        except (websocket.WebSocketTimeoutException, TimeoutError):
            return None
        except (websocket.WebSocketException, OSError, ValueError) as exc:
            raise ChannelClosedError(f"{type(exc).__name__}: {exc}") from exc
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise ChannelClosedError("closed by the server")
        if opcode == websocket.ABNF.OPCODE_TEXT:
            return data.decode("utf-8", "replace") if isinstance(data, bytes | bytearray) else str(data)
        return bytes(data)

    def close(self) -> None:
        # Closing a dead socket raises; there is nothing left to release then.
        with contextlib.suppress(websocket.WebSocketException, OSError):
            self._ws.close(timeout=0.5)
