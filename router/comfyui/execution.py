"""Watching one submitted prompt on its WebSocket until it ends, within a deadline.

`Execution.wait()` blocks on the socket (never a polling sleep) with a receive timeout equal to
the time left, so `timeout_s` is honoured to within one message. It reads only the messages of
its own prompt_id, reports progress, interrupts ComfyUI when the caller's progress callback asks
for it, and turns what happened into an outcome (`router.comfyui.outcomes`).

The one place that polls is the fallback after the socket drops mid-run: a bounded number of
`GET /history/<prompt_id>` with backoff, because history is the only other record of the end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, Protocol

from router.comfyui.errors import ComfyUIError
from router.comfyui.outcomes import (
    ImageRef,
    Outcome,
    Progress,
    SocketDropped,
    Succeeded,
    TimedOut,
    Timings,
)
from router.comfyui.protocol import (
    HistoryEntry,
    WsMessage,
    images_from_outputs,
    outcome_from_history,
    parse_execution_error,
    parse_execution_interrupted,
    parse_ws_message,
    queue_remaining,
    server_seconds,
)
from router.comfyui.ws import ChannelClosedError, WsChannel

log = logging.getLogger(__name__)

ProgressCallback = Callable[[Progress], bool | None]

# Backoff between /history polls after the socket drops: about 8 s in all, bounded by timeout_s.
DEFAULT_HISTORY_POLL_DELAYS_S: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.8, 1.5, 2.0, 3.0)


class ExecutionBackend(Protocol):
    """What an Execution needs from the client (ComfyUIClient satisfies it)."""

    def interrupt(self, prompt_id: str | None) -> None: ...

    def delete_from_queue(self, prompt_ids: Sequence[str]) -> None: ...

    def history(self, prompt_id: str) -> HistoryEntry | None: ...


class Execution:
    """One prompt submitted by `ComfyUIClient.start()`.

    If the submission itself failed (connection refused, invalid graph, HTTP error), `outcome`
    is already set and `wait()` returns it at once. Otherwise `wait()` may be called again after
    a `TimedOut` or `SocketDropped`; any other outcome is final and returned by every later call.
    """

    def __init__(
        self,
        *,
        backend: ExecutionBackend,
        prompt_id: str,
        client_id: str,
        submitted_at: float,
        channel: WsChannel | None,
        outcome: Outcome | None = None,
        number: int | None = None,
        node_errors: Mapping[str, Any] | None = None,
        history_poll_delays_s: Sequence[float] = DEFAULT_HISTORY_POLL_DELAYS_S,
        on_close: Callable[[Execution], None] | None = None,  # called once the socket is closed
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.prompt_id = prompt_id
        self.client_id = client_id
        self.submitted_at = submitted_at
        self.number = number
        self.node_errors: Mapping[str, Any] = node_errors or {}
        self._backend = backend
        self._channel = channel
        self._outcome = outcome
        self._poll_delays_s = tuple(history_poll_delays_s)
        self._on_close = on_close
        self._sleep = sleep
        self._submitted = outcome is None
        self._closed = False
        self._watch = _Watch()
        self._interrupt_requested = False
        self._drop_reason: str | None = None

    # --- public ---------------------------------------------------------------------------------

    @property
    def submitted(self) -> bool:
        """False when the prompt never reached ComfyUI's queue (see `outcome`)."""
        return self._submitted

    @property
    def outcome(self) -> Outcome | None:
        """The final outcome once known, else None."""
        return self._outcome

    @property
    def started(self) -> bool:
        return self._watch.started

    def wait(self, *, timeout_s: float, on_progress: ProgressCallback | None = None) -> Outcome:
        """Block until the prompt ends or timeout_s passes. Never raises a network exception."""
        if self._outcome is not None:
            return self._outcome
        deadline = time.monotonic() + max(0.0, timeout_s)
        while self._channel is not None:
            # Receive before checking the deadline so that even wait(timeout_s=0) takes in what
            # has already arrived; check after, so a steady stream of messages cannot overrun it.
            try:
                raw = self._channel.receive(max(0.0, deadline - time.monotonic()))
            except ChannelClosedError as exc:
                self._drop(str(exc))
                break
            message = parse_ws_message(raw) if raw is not None else None
            outcome = self._handle(message, on_progress) if message is not None else None
            if outcome is not None:
                return self._finish(outcome)
            if time.monotonic() >= deadline:
                return self._timed_out(timeout_s)
        return self._recover_from_history(deadline)

    def cancel(self) -> None:
        """Stop the prompt: removed from the queue if still pending, interrupted if running.

        Both requests are sent unless the prompt is known to be running, because a pending
        prompt may start between our last message and the request: each request is a no-op
        for a prompt in the other state. Raises ComfyUIError if the backend cannot be reached.
        """
        if self._outcome is not None or not self.submitted:
            return
        self._interrupt_requested = True
        if not self._watch.started:
            self._backend.delete_from_queue([self.prompt_id])
        self._backend.interrupt(self.prompt_id)

    def close(self) -> None:
        """Release the WebSocket. Does not cancel the prompt (call cancel() first for that)."""
        if self._closed:
            return
        self._closed = True
        if self._channel is not None:
            self._drop_reason = "closed by the caller"
        self._close_channel()

    def __enter__(self) -> Execution:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- messages -------------------------------------------------------------------------------

    def _handle(self, message: WsMessage, on_progress: ProgressCallback | None) -> Outcome | None:
        watch = self._watch
        if message.type == "status":
            watch.queue_remaining = queue_remaining(message)
            return None
        if message.prompt_id != self.prompt_id:
            return None  # another prompt's event (a shared client_id, or an older run)
        now_s = self._elapsed_s()
        data = message.data
        kind = message.type
        if kind == "execution_start":
            watch.start(now_s, data)
        elif kind == "execution_cached":
            nodes = data.get("nodes")
            watch.cached_nodes = tuple(str(n) for n in nodes) if isinstance(nodes, list) else ()
        elif kind == "executing":
            node = data.get("node")
            if node is None:
                return self._finished(now_s)
            watch.enter_node(str(node), now_s)
            self._report(on_progress, watch.progress(0, 0, str(node), now_s, "executing"))
        elif kind == "progress":
            node = data.get("node")
            node_id = str(node) if node is not None else watch.current_node
            progress = watch.progress(
                _int(data.get("value")), _int(data.get("max")), node_id, now_s, "progress"
            )
            self._report(on_progress, progress)
        elif kind == "executed":
            output = data.get("output")
            node = data.get("node")
            if isinstance(output, Mapping) and node is not None:
                watch.ws_images.extend(images_from_outputs({str(node): output}))
        elif kind == "execution_success":
            watch.end_message = data
        elif kind == "execution_error":
            watch.end_message = data
            return parse_execution_error(self.prompt_id, data, duration_s=now_s)
        elif kind == "execution_interrupted":
            return parse_execution_interrupted(
                self.prompt_id, data, duration_s=now_s, requested=self._interrupt_requested
            )
        return None

    def _report(self, on_progress: ProgressCallback | None, progress: Progress) -> None:
        self._watch.last_progress = progress
        if on_progress is None:
            return
        # Once asked, the interrupt is not sent again: ComfyUI applies it at its next check.
        if on_progress(progress) is True and not self._interrupt_requested:
            self._request_interrupt()

    def _request_interrupt(self) -> None:
        self._interrupt_requested = True
        try:
            self._backend.interrupt(self.prompt_id)
        except ComfyUIError as exc:
            # The deadline still bounds wait(); the caller sees TimedOut(interrupt_requested=True).
            log.warning("interrupt of %s failed: %s", self.prompt_id, exc)

    def _finished(self, now_s: float) -> Outcome:
        """`executing` with node null: ComfyUI has stored the history entry by now."""
        watch = self._watch
        watch.finish(now_s)
        entry = self._history_or_none()
        if entry is not None and entry.status_str not in (None, "success"):
            return outcome_from_history(
                entry, duration_s=now_s, interrupt_requested=self._interrupt_requested
            )
        images = entry.images if entry is not None else list(watch.ws_images)
        cached_nodes = watch.cached_nodes or (entry.cached_nodes if entry else ())
        return Succeeded(
            prompt_id=self.prompt_id,
            images=images,
            duration_s=now_s,
            started_at_s=watch.started_at_s,
            cached=entry.cached if entry is not None else watch.all_cached,
            cached_nodes=cached_nodes,
            timings=watch.timings(now_s),
        )

    # --- socket lost ----------------------------------------------------------------------------

    def _drop(self, reason: str) -> None:
        log.info("WebSocket of %s dropped: %s", self.prompt_id, reason)
        self._drop_reason = reason
        self._close_channel()

    def _recover_from_history(self, deadline: float) -> Outcome:
        polls = 0
        for delay_s in self._poll_delays_s:
            if polls > 0:
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0:
                    break
                self._sleep(min(delay_s, remaining_s))
            polls += 1
            entry = self._history_or_none()
            if entry is not None:
                now_s = self._elapsed_s()
                outcome = outcome_from_history(
                    entry, duration_s=now_s, interrupt_requested=self._interrupt_requested
                )
                if isinstance(outcome, Succeeded):
                    outcome = self._merge_ws_knowledge(outcome)
                return self._finish(outcome)
        return SocketDropped(
            prompt_id=self.prompt_id,
            duration_s=self._elapsed_s(),
            history_polls=polls,
            reason=self._drop_reason or "socket closed",
        )

    def _merge_ws_knowledge(self, outcome: Succeeded) -> Succeeded:
        watch = self._watch
        return Succeeded(
            prompt_id=outcome.prompt_id,
            images=outcome.images,
            duration_s=outcome.duration_s,
            started_at_s=watch.started_at_s,
            cached=outcome.cached,
            cached_nodes=outcome.cached_nodes,
            timings=Timings(
                queued_s=watch.started_at_s,
                server_run_s=outcome.timings.server_run_s,
                node_s=dict(watch.node_s),
            ),
        )

    def _history_or_none(self) -> HistoryEntry | None:
        try:
            return self._backend.history(self.prompt_id)
        except ComfyUIError as exc:
            log.warning("history of %s unavailable: %s", self.prompt_id, exc)
            return None

    # --- helpers --------------------------------------------------------------------------------

    def _timed_out(self, timeout_s: float) -> TimedOut:
        return TimedOut(
            prompt_id=self.prompt_id,
            timeout_s=timeout_s,
            duration_s=self._elapsed_s(),
            started=self._watch.started,
            last_progress=self._watch.last_progress,
            interrupt_requested=self._interrupt_requested,
        )

    def _finish(self, outcome: Outcome) -> Outcome:
        self._outcome = outcome
        self._close_channel()
        return outcome

    def _close_channel(self) -> None:
        """Close the socket once and tell the client its id is free again."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close(self)

    def _elapsed_s(self) -> float:
        return time.monotonic() - self.submitted_at


class _Watch:
    """What the socket has told us so far about our prompt."""

    def __init__(self) -> None:
        self.started_at_s: float | None = None
        self.finished_at_s: float | None = None
        self.start_message: Mapping[str, Any] | None = None
        self.end_message: Mapping[str, Any] | None = None
        self.cached_nodes: tuple[str, ...] = ()
        self.current_node: str | None = None
        self.node_entered_s: float | None = None
        self.node_s: dict[str, float] = {}
        self.executed_any_node = False
        self.ws_images: list[ImageRef] = []
        self.queue_remaining: int | None = None
        self.last_progress: Progress | None = None

    @property
    def started(self) -> bool:
        return self.started_at_s is not None

    @property
    def all_cached(self) -> bool:
        """No node ran but some came from the cache: an identical graph ran before."""
        return bool(self.cached_nodes) and not self.executed_any_node

    def start(self, now_s: float, message: Mapping[str, Any]) -> None:
        self.started_at_s = now_s
        self.start_message = message

    def enter_node(self, node: str, now_s: float) -> None:
        self._leave_node(now_s)
        if self.started_at_s is None:
            self.started_at_s = now_s  # execution_start was missed (older ComfyUI)
        self.current_node = node
        self.node_entered_s = now_s
        self.executed_any_node = True

    def finish(self, now_s: float) -> None:
        self._leave_node(now_s)
        self.finished_at_s = now_s

    def progress(
        self, value: int, max_: int, node: str | None, now_s: float, event: Literal["progress", "executing"]
    ) -> Progress:
        return Progress(value, max_, node, now_s, self.started_at_s, event, self.queue_remaining)

    def timings(self, now_s: float) -> Timings:
        return Timings(
            queued_s=self.started_at_s,
            run_s=None if self.started_at_s is None else now_s - self.started_at_s,
            server_run_s=server_seconds(self.start_message, self.end_message),
            node_s=dict(self.node_s),
        )

    def _leave_node(self, now_s: float) -> None:
        if self.current_node is not None and self.node_entered_s is not None:
            self.node_s[self.current_node] = self.node_s.get(self.current_node, 0.0) + (
                now_s - self.node_entered_s
            )
        self.current_node = None
        self.node_entered_s = None


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0
