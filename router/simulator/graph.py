"""Graph helpers: links, ComfyUI's execution order, and node signatures for the output cache.

The order reproduces ComfyUI's `ExecutionList`: nodes are staged depth-first from the output nodes,
and among the ready ones an output node goes first, then a node feeding an output, then a node two
links away from one, else the first ready node. That is why a real run executes
`4, 5, 7, 6, 3, 8, 9` for the stock text-to-image graph, and the simulator does too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

JsonDict = dict[str, Any]


class DependencyCycleError(Exception):
    """Some nodes wait on each other (ComfyUI reports the same)."""


def is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int | float)
        and not isinstance(value[1], bool)
    )


def node_inputs(prompt: Mapping[str, Any], node_id: str) -> dict[str, Any]:
    inputs = prompt[node_id].get("inputs", {})
    return inputs if isinstance(inputs, dict) else {}


class ExecutionOrder:
    """Which node runs next; cached nodes are never staged."""

    def __init__(
        self,
        prompt: Mapping[str, Any],
        is_cached: Callable[[str], bool],
        is_output: Callable[[str], bool],
    ) -> None:
        self._prompt = prompt
        self._is_cached = is_cached
        self._is_output = is_output
        self._pending: dict[str, None] = {}  # insertion-ordered set
        self._blocking: dict[str, dict[str, None]] = {}
        self._block_count: dict[str, int] = {}

    def add(self, node_id: str) -> None:
        stack = [node_id]
        links: list[tuple[str, str]] = []
        while stack:
            current = stack.pop()
            if current in self._pending:
                continue
            self._pending[current] = None
            self._block_count[current] = 0
            self._blocking[current] = {}
            for value in node_inputs(self._prompt, current).values():
                if is_link(value):
                    source = value[0]
                    if not self._is_cached(source):
                        stack.append(source)
                    links.append((source, current))
        for source, target in links:
            self._add_link(source, target)

    def _add_link(self, source: str, target: str) -> None:
        if self._is_cached(source):
            return
        self.add(source)
        if target not in self._blocking[source]:
            self._blocking[source][target] = None
            self._block_count[target] += 1

    def is_empty(self) -> bool:
        return not self._pending

    def pending(self) -> list[str]:
        return list(self._pending)

    def next(self) -> str | None:
        if not self._pending:
            return None
        ready = [n for n in self._pending if self._block_count[n] == 0]
        if not ready:
            raise DependencyCycleError("Dependency cycle detected")
        return self._pick(ready)

    def _pick(self, ready: list[str]) -> str:
        """Prefer whatever shows a result soonest, like ComfyUI's `ux_friendly_pick_node`."""
        for node_id in ready:
            if self._is_output(node_id):
                return node_id
        for node_id in ready:
            if any(self._is_output(b) for b in self._blocking[node_id]):
                return node_id
        for node_id in ready:
            for blocked in self._blocking[node_id]:
                if any(self._is_output(b) for b in self._blocking.get(blocked, {})):
                    return node_id
        return ready[0]

    def complete(self, node_id: str) -> None:
        self._pending.pop(node_id, None)
        for target in self._blocking.pop(node_id, {}):
            self._block_count[target] -= 1


def node_signatures(prompt: Mapping[str, Any], salt: Callable[[str], Any]) -> dict[str, str]:
    """A hash per node of its class, inputs and ancestors: equal hashes give equal outputs.

    `salt` adds what the inputs do not show (an input image's file state, like ComfyUI's IS_CHANGED).
    """
    memo: dict[str, str] = {}

    def signature(node_id: str, visiting: frozenset[str]) -> str:
        if node_id in memo:
            return memo[node_id]
        if node_id in visiting or node_id not in prompt:
            return f"missing:{node_id}"
        node = prompt[node_id]
        parts: list[Any] = [node.get("class_type"), salt(node_id)]
        inputs = node_inputs(prompt, node_id)
        for name in sorted(inputs):
            value = inputs[name]
            if is_link(value):
                parts.append([name, "link", signature(value[0], visiting | {node_id}), value[1]])
            else:
                parts.append([name, "value", value])
        digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
        memo[node_id] = digest
        return digest

    return {node_id: signature(node_id, frozenset()) for node_id in prompt}
