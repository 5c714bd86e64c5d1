"""One WebSocket per ComfyUI client, shared by every prompt it runs at once.

ComfyUI sends a prompt's events (execution_start, progress, executed...) to the socket of the
client_id it was submitted with, and broadcasts every queue change (`status`) to every socket.
With one socket per prompt, N prompts in flight on a backend meant each read O(N) `status`
frames, O(N^2) in all: under the load bench's 500 jobs that was most of the router's CPU (and
of ComfyUI's). Here one reader thread takes in each frame once and hands it to the mailbox of
the prompt named in it; `status` frames and binary previews, which name no prompt, are dropped.

A mailbox is the `WsChannel` an `Execution` reads, so the execution watch is unchanged. When the
socket is lost, every mailbox raises ChannelClosedError (the executions fall back to /history)
and the next subscription opens a new socket. The reader closes the socket once no prompt has
used it for `idle_close_s`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from router.comfyui.errors import ComfyUIConnectionError
from router.comfyui.ws import ChannelClosedError, WsChannel, WsConnect

log = logging.getLogger(__name__)

READ_WAIT_S = 0.25  # how often an idle reader looks whether it should close


@dataclass(frozen=True)
class _Lost:
    reason: str


class Mailbox:
    """The frames of one prompt, as a WsChannel."""

    def __init__(self, hub: SocketHub, prompt_id: str) -> None:
        self.prompt_id = prompt_id
        self._hub = hub
        self._frames: queue.SimpleQueue[str | _Lost] = queue.SimpleQueue()

    def deliver(self, frame: str | _Lost) -> None:
        self._frames.put(frame)

    def receive(self, timeout_s: float) -> str | bytes | None:
        try:
            frame = self._frames.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            return None
        if isinstance(frame, _Lost):
            self._frames.put(frame)  # every later receive says so too
            raise ChannelClosedError(frame.reason)
        return frame

    def close(self) -> None:
        self._hub.unsubscribe(self)


class SocketHub:
    def __init__(self, url: str, connect: WsConnect, timeout_s: float, idle_close_s: float = 5.0) -> None:
        self.url = url
        self._connect = connect
        self._timeout_s = timeout_s
        self.idle_close_s = idle_close_s
        self._lock = threading.Lock()
        self._channel: WsChannel | None = None
        self._mailboxes: dict[str, Mailbox] = {}
        self._idle_since = time.monotonic()
        self._closed = False
        self._handshake: Future[None] | None = None  # the handshake under way, shared

    def subscribe(self, prompt_id: str) -> Mailbox:
        """A mailbox for `prompt_id`, the socket opened first if needed (raises ComfyUIError).

        Concurrent first submissions share one handshake, made outside the lock: with a backend
        that does not answer, they all wait one `timeout_s`, not one each in turn."""
        for _ in range(3):  # the socket may be lost between its handshake and our turn
            with self._lock:
                if self._channel is not None:
                    box = Mailbox(self, prompt_id)
                    self._mailboxes[prompt_id] = box
                    return box
                handshake, leader = self._handshake, self._handshake is None
                if handshake is None:
                    handshake = self._handshake = Future()
            if leader:
                self._open(handshake)
            handshake.result()  # the leader's ComfyUIError, if the handshake failed
        raise ComfyUIConnectionError(f"WebSocket {self.url} keeps closing right after opening", url=self.url)

    def _open(self, handshake: Future[None]) -> None:
        try:
            channel = self._connect(self.url, self._timeout_s)
        except BaseException as exc:
            with self._lock:
                self._handshake = None
            handshake.set_exception(exc)
            return
        with self._lock:
            self._channel = channel
            self._closed = False
            self._handshake = None
        threading.Thread(target=self._read, args=(channel,), name="comfyui-ws", daemon=True).start()
        handshake.set_result(None)

    def rename(self, box: Mailbox, prompt_id: str) -> None:
        """ComfyUI answered with another prompt id than the one asked for: listen for that one."""
        with self._lock:
            if self._mailboxes.get(box.prompt_id) is box:
                del self._mailboxes[box.prompt_id]
            box.prompt_id = prompt_id
            self._mailboxes[prompt_id] = box

    def unsubscribe(self, box: Mailbox) -> None:
        with self._lock:
            if self._mailboxes.get(box.prompt_id) is box:
                del self._mailboxes[box.prompt_id]
            if not self._mailboxes:
                self._idle_since = time.monotonic()

    def close(self) -> None:
        """Stop reading: the reader closes the socket at its next wake-up."""
        with self._lock:
            self._closed = True

    # --- the reader thread ------------------------------------------------------------------------

    def _read(self, channel: WsChannel) -> None:
        while True:
            try:
                frame = channel.receive(READ_WAIT_S)
            except ChannelClosedError as exc:
                self._lost(channel, str(exc))
                return
            if frame is None:
                if self._retire_if_idle(channel):
                    return
                continue
            if isinstance(frame, bytes):
                continue  # previews: they name no prompt and the execution watch ignores them
            box = self._mailbox_for(frame)
            if box is not None:
                box.deliver(frame)

    def _mailbox_for(self, frame: str) -> Mailbox | None:
        try:
            message = json.loads(frame)
        except ValueError:
            return None
        data = message.get("data") if isinstance(message, dict) else None
        prompt_id = data.get("prompt_id") if isinstance(data, dict) else None
        if not isinstance(prompt_id, str):
            return None  # status and other broadcasts
        with self._lock:
            return self._mailboxes.get(prompt_id)

    def _retire_if_idle(self, channel: WsChannel) -> bool:
        with self._lock:
            idle = not self._mailboxes and time.monotonic() - self._idle_since >= self.idle_close_s
            if not (self._closed or idle) or self._channel is not channel:
                return False
            self._channel = None
            lost = list(self._mailboxes.values())
            self._mailboxes.clear()
        for box in lost:
            box.deliver(_Lost("closed by the caller"))
        with contextlib.suppress(Exception):  # closing a dead socket raises; nothing to release then
            channel.close()
        return True

    def _lost(self, channel: WsChannel, reason: str) -> None:
        with self._lock:
            if self._channel is not channel:
                return
            self._channel = None
            lost = list(self._mailboxes.values())
            self._mailboxes.clear()
        log.info("WebSocket %s lost (%s); %d prompt(s) fall back to /history", self.url, reason, len(lost))
        for box in lost:
            box.deliver(_Lost(reason))
        with contextlib.suppress(Exception):
            channel.close()
