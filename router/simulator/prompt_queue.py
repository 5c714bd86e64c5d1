"""ComfyUI's prompt queue and history: a heap ordered by number (negative for `front`), one running
item, and a history of at most 10,000 entries kept in memory, in the shapes of `/queue` and `/history`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

JsonDict = dict[str, Any]
MAX_HISTORY = 10_000


@dataclass
class QueueItem:
    number: float
    prompt_id: str
    prompt: JsonDict
    extra_data: JsonDict
    outputs: list[str]

    def as_list(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]

    @property
    def client_id(self) -> str | None:
        client_id = self.extra_data.get("client_id")
        return client_id if isinstance(client_id, str) else None


class PromptQueue:
    """`on_change` runs whenever the number of queued plus running prompts may have changed."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change
        self._heap: list[tuple[float, int, QueueItem]] = []
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self.running: QueueItem | None = None
        self.history: OrderedDict[str, JsonDict] = OrderedDict()

    @property
    def remaining(self) -> int:
        return len(self._heap) + (1 if self.running is not None else 0)

    def put(self, item: QueueItem) -> None:
        heapq.heappush(self._heap, (item.number, next(self._seq), item))
        self._wakeup.set()
        self._on_change()

    async def get(self) -> QueueItem:
        while not self._heap:
            self._wakeup.clear()
            await self._wakeup.wait()
        _, _, item = heapq.heappop(self._heap)
        self.running = item
        self._on_change()
        return item

    def pending(self) -> list[QueueItem]:
        return [entry[2] for entry in sorted(self._heap)]

    def task_done(self, item: QueueItem, entry: JsonDict) -> None:
        self.running = None
        while len(self.history) >= MAX_HISTORY:
            self.history.popitem(last=False)
        self.history[item.prompt_id] = entry
        self._on_change()

    def delete(self, prompt_ids: list[str]) -> None:
        for prompt_id in prompt_ids:
            for index, (_, _, item) in enumerate(self._heap):
                if item.prompt_id == prompt_id:
                    self._heap.pop(index)
                    heapq.heapify(self._heap)
                    self._on_change()
                    break

    def wipe(self) -> None:
        self._heap.clear()
        self._on_change()

    def queue_json(self) -> JsonDict:
        running = [self.running.as_list()] if self.running is not None else []
        return {"queue_running": running, "queue_pending": [item.as_list() for item in self.pending()]}

    def history_json(self, max_items: int | None = None, offset: int = -1) -> JsonDict:
        ids = list(self.history)
        if offset < 0 and max_items is not None:
            offset = len(ids) - max_items
        offset = max(offset, 0)
        chosen = ids[offset:] if max_items is None else ids[offset : offset + max_items]
        return {prompt_id: self.history[prompt_id] for prompt_id in chosen}


def history_entry(item: QueueItem, outputs: JsonDict, status: JsonDict, meta: JsonDict) -> JsonDict:
    return {"prompt": item.as_list(), "outputs": outputs, "status": status, "meta": meta}


# ---- /api/jobs: the newer job view over the same queue and history ----

JOB_STATUSES: tuple[str, ...] = ("pending", "in_progress", "completed", "failed")


def job_summaries(queue: PromptQueue) -> list[JsonDict]:
    jobs = [_queued_job(item, "pending") for item in queue.pending()]
    if queue.running is not None:
        jobs.append(_queued_job(queue.running, "in_progress"))
    jobs.extend(_finished_job(entry) for entry in queue.history.values())
    return jobs


def job_detail(queue: PromptQueue, job_id: str) -> JsonDict | None:
    entry = queue.history.get(job_id)
    if entry is not None:
        job = _finished_job(entry)
        job.pop("preview_output", None)
        job.pop("execution_error", None)
        job["outputs"] = entry["outputs"]
        job["execution_status"] = entry["status"]
        job["workflow"] = {"prompt": entry["prompt"][2], "extra_data": entry["prompt"][3]}
        return job
    for item, status in _queued(queue):
        if item.prompt_id == job_id:
            job = _queued_job(item, status)
            job["workflow"] = {"prompt": item.prompt, "extra_data": item.extra_data}
            return job
    return None


def _queued(queue: PromptQueue) -> list[tuple[QueueItem, str]]:
    items = [(item, "pending") for item in queue.pending()]
    if queue.running is not None:
        items.append((queue.running, "in_progress"))
    return items


def _queued_job(item: QueueItem, status: str) -> JsonDict:
    return {
        "id": item.prompt_id,
        "status": status,
        "priority": item.number,
        "create_time": item.extra_data.get("create_time"),
        "outputs_count": 0,
    }


def _finished_job(entry: JsonDict) -> JsonDict:
    number, prompt_id, _, extra_data, _ = entry["prompt"]
    status = entry["status"]
    messages: list[list[Any]] = status["messages"]
    job: JsonDict = {
        "id": prompt_id,
        "status": "completed" if status["status_str"] == "success" else "failed",
        "priority": number,
        "create_time": extra_data.get("create_time"),
    }
    if messages:
        job["execution_start_time"] = messages[0][1].get("timestamp")
        job["execution_end_time"] = messages[-1][1].get("timestamp")
    error = next((data for event, data in messages if event == "execution_error"), None)
    if error is not None:
        job["execution_error"] = error
    images = [(node_id, image) for node_id, ui in entry["outputs"].items() for image in ui.get("images", [])]
    job["outputs_count"] = len(images)
    if images:
        node_id, image = images[0]
        job["preview_output"] = {**image, "nodeId": node_id, "mediaType": "images"}
    return job
