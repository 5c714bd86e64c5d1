"""The aiohttp application: ComfyUI 0.8.0's routes (also under `/api`), its WebSocket, and `/sim/*`.

One worker coroutine executes the queue in order; a publisher coroutine sends WebSocket messages in
the order they were emitted (ComfyUI does the same with its message queue), so a slow client cannot
reorder events. Everything runs on one event loop: no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import random
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
from aiohttp import WSMsgType, web

from router.catalog import Catalog
from router.simulator.execution import Executor, SimState, now_ms
from router.simulator.faults import FaultError, Faults, apply_faults
from router.simulator.files import FileStore
from router.simulator.gpu import BYTES_PER_MB, GpuMemory, GpuSpec
from router.simulator.nodes import NodeDefinitions
from router.simulator.prompt_queue import (
    JOB_STATUSES,
    PromptQueue,
    QueueItem,
    history_entry,
    job_detail,
    job_summaries,
)
from router.simulator.validation import error_body, validate_prompt

JsonDict = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("router.simulator")

COMFYUI_VERSION = "0.8.0"
SYSTEM_VERSIONS: JsonDict = {
    "comfyui_version": COMFYUI_VERSION,
    "required_frontend_version": "1.35.9",
    "installed_templates_version": "0.7.67",
    "required_templates_version": "0.7.67",
}
FEATURES: JsonDict = {
    "supports_preview_metadata": True,
    "max_upload_size": 104857600,
    "extension": {"manager": {"supports_v4": True}},
}
EXTENSIONS: tuple[str, ...] = (
    "/extensions/core/groupNode.js",
    "/extensions/core/clipspace.js",
    "/extensions/core/widgetInputs.js",
    "/extensions/core/groupNodeManage.js",
)
SENSITIVE_EXTRA_DATA_KEYS: tuple[str, ...] = ("auth_token_comfy_org", "api_key_comfy_org")
INTERNAL_ERROR_TEXT = "500 Internal Server Error\n\nServer got itself in trouble"
WS_SEND_TIMEOUT_S = 5.0
INDEX_HTML = (
    "<!doctype html><html><head><title>ComfyUI (comfy-router simulator)</title></head><body>"
    "<p>This is the comfy-router ComfyUI simulator: the ComfyUI API without a GPU or a frontend.</p>"
    "</body></html>"
)


@dataclass(frozen=True)
class SimulatorConfig:
    catalog: Catalog
    gpu: GpuSpec
    slowdown: float = 1.0
    seed: int = 0
    custom_nodes: bool = True
    argv: tuple[str, ...] = field(default_factory=tuple)


def internal_error() -> web.Response:
    """What aiohttp answers when a ComfyUI handler raises (e.g. a body that is not JSON)."""
    return web.Response(status=500, text=INTERNAL_ERROR_TEXT, content_type="text/plain")


async def read_json(request: web.Request) -> Any:
    """The body as JSON; raises ValueError for anything else (callers answer 500 like ComfyUI)."""
    return json.loads(await request.text())


class _Socket:
    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        self.request = request


class SimulatorServer:
    """One simulated ComfyUI backend; build with `app()`, run with an aiohttp runner."""

    def __init__(self, config: SimulatorConfig, files: FileStore | None = None) -> None:
        self.config = config
        self.files = files or FileStore()
        defs = NodeDefinitions(
            config.catalog, custom_nodes=config.custom_nodes, list_input_images=self.files.list_input_images
        )
        self.state = SimState(
            catalog=config.catalog,
            gpu=config.gpu,
            memory=GpuMemory(config.gpu.vram_mb),
            files=self.files,
            defs=defs,
            base_slowdown=config.slowdown,
            seed=config.seed,
            rng=random.Random(config.seed),
        )
        self.sockets: dict[str, _Socket] = {}
        self._number = 0
        self._outbox: asyncio.Queue[tuple[str, JsonDict, str | None] | None] = asyncio.Queue()
        self._unhang = asyncio.Event()
        self._unhang.set()
        self._pending_free: dict[str, bool] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.queue = PromptQueue(on_change=self._queue_changed)
        self.executor = Executor(self.state, self._emit, self._request_drop)

    # ---- app wiring ----

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._fault_middleware], client_max_size=100 * 1024 * 1024)
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/ws", self.websocket),
            ("GET", "/embeddings", self.get_embeddings),
            ("GET", "/models", self.get_models),
            ("GET", "/models/{folder}", self.get_model_folder),
            ("GET", "/extensions", self.get_extensions),
            ("GET", "/features", self.get_features),
            ("POST", "/upload/image", self.upload_image),
            ("GET", "/view", self.view),
            ("GET", "/system_stats", self.system_stats),
            ("GET", "/prompt", self.get_prompt),
            ("POST", "/prompt", self.post_prompt),
            ("GET", "/object_info", self.object_info),
            ("GET", "/object_info/{node_class}", self.object_info_one),
            ("GET", "/history", self.get_history),
            ("GET", "/history/{prompt_id}", self.get_history_one),
            ("POST", "/history", self.post_history),
            ("GET", "/queue", self.get_queue),
            ("POST", "/queue", self.post_queue),
            ("POST", "/interrupt", self.post_interrupt),
            ("POST", "/free", self.post_free),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
            app.router.add_route(method, "/api" + path, handler)
        app.router.add_get("/api/jobs", self.get_jobs)
        app.router.add_get("/api/jobs/{job_id}", self.get_job)
        app.router.add_get("/", self.index)
        app.router.add_post("/sim/faults", self.post_faults)
        app.router.add_get("/sim/state", self.get_state)
        app.on_startup.append(self._start_tasks)
        app.on_shutdown.append(self._shutdown)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _start_tasks(self, _: web.Application) -> None:
        self._tasks = [asyncio.create_task(self._worker()), asyncio.create_task(self._publisher())]

    async def _shutdown(self, _: web.Application) -> None:
        self._unhang.set()  # stalled requests must finish for a bounded shutdown
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sock in list(self.sockets.values()):
            _abort(sock)
        self.sockets.clear()

    async def _cleanup(self, _: web.Application) -> None:
        self.files.close()

    @web.middleware
    async def _fault_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/sim/"):
            if self.state.faults.hang:
                await self._unhang.wait()
            if self.state.faults.http_500:
                return internal_error()
        return await handler(request)

    # ---- WebSocket ----

    def _emit(self, event: str, data: JsonDict, sid: str | None) -> None:
        self._outbox.put_nowait((event, data, sid))

    def _request_drop(self) -> None:
        self._outbox.put_nowait(None)

    def _queue_changed(self) -> None:
        self._emit("status", {"status": self._status()}, None)

    def _status(self) -> JsonDict:
        return {"exec_info": {"queue_remaining": self.queue.remaining}}

    async def _publisher(self) -> None:
        while True:
            item = await self._outbox.get()
            if item is None:
                for sock in list(self.sockets.values()):
                    _abort(sock)
                self.sockets.clear()
                continue
            event, data, sid = item
            text = json.dumps({"type": event, "data": data})
            targets = (
                list(self.sockets.items())
                if sid is None
                else [(sid, s) for s in [self.sockets.get(sid)] if s]
            )
            for target_sid, sock in targets:
                try:
                    await asyncio.wait_for(sock.ws.send_str(text), WS_SEND_TIMEOUT_S)
                except (ConnectionError, RuntimeError, TimeoutError):
                    if self.sockets.get(target_sid) is sock:
                        del self.sockets[target_sid]

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(timeout=2.0)
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        sock = _Socket(ws, request)
        self.sockets[sid] = sock  # a reconnect with the same clientId replaces the old socket
        self._emit("status", {"status": self._status(), "sid": sid}, sid)
        if self.state.running_client == sid and self.state.last_node is not None:
            self._emit("executing", {"node": self.state.last_node}, sid)
        first = True
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT and first:
                    self._answer_feature_flags(msg.data, sid)
                first = False
        finally:
            if self.sockets.get(sid) is sock:
                del self.sockets[sid]
        return ws

    def _answer_feature_flags(self, text: str, sid: str) -> None:
        with contextlib.suppress(ValueError):
            message = json.loads(text)
            if isinstance(message, dict) and message.get("type") == "feature_flags":
                self._emit("feature_flags", FEATURES, sid)

    # ---- worker ----

    async def _worker(self) -> None:
        while True:
            item = await self.queue.get()
            try:
                outcome = await self.executor.execute(item)
            except Exception:  # a simulator bug must not kill the worker: report it like ComfyUI would
                log.exception("simulator: unexpected error running %s", item.prompt_id)
                outcome = None
            if outcome is None:
                status: JsonDict = {"status_str": "error", "completed": False, "messages": []}
                self.queue.task_done(item, history_entry(item, {}, status, {}))
            else:
                self.queue.task_done(
                    item, history_entry(item, outcome.outputs, outcome.status(), outcome.meta)
                )
            if item.client_id is not None:
                self._emit("executing", {"node": None, "prompt_id": item.prompt_id}, item.client_id)
            self._apply_free()

    def _apply_free(self) -> None:
        flags, self._pending_free = self._pending_free, {}
        free_memory = flags.get("free_memory", False)
        if flags.get("unload_models", free_memory):
            unloaded = self.state.unload_models()
            log.info("simulator: /free unloaded %s", unloaded or "nothing")
        if free_memory:
            self.state.cache.clear()

    # ---- ComfyUI routes ----

    async def index(self, _: web.Request) -> web.StreamResponse:
        return web.Response(text=INDEX_HTML, content_type="text/html")

    async def get_embeddings(self, _: web.Request) -> web.StreamResponse:
        return web.json_response([])

    async def get_models(self, _: web.Request) -> web.StreamResponse:
        return web.json_response(self.state.defs.folders())

    async def get_model_folder(self, request: web.Request) -> web.StreamResponse:
        files = self.state.defs.folder_files(request.match_info["folder"])
        if files is None:
            return web.Response(status=404)
        return web.json_response(files)

    async def get_extensions(self, _: web.Request) -> web.StreamResponse:
        return web.json_response(list(EXTENSIONS))

    async def get_features(self, _: web.Request) -> web.StreamResponse:
        return web.json_response(FEATURES)

    async def upload_image(self, request: web.Request) -> web.StreamResponse:
        post = await request.post()
        image = post.get("image")
        if not isinstance(image, web.FileField) or not image.filename:
            return web.Response(status=400)
        overwrite = str(post.get("overwrite", "")) in ("true", "1")
        kind = post.get("type")
        saved = self.files.save_upload(
            image.file.read(),
            image.filename,
            str(post.get("subfolder", "")),
            kind if isinstance(kind, str) else None,
            overwrite,
        )
        if saved is None:
            return web.Response(status=400)
        return web.json_response({"name": saved.filename, "subfolder": saved.subfolder, "type": saved.type})

    async def view(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        if "filename" not in query:
            return web.Response(status=404)
        status, path = self.files.view_path(
            query["filename"], query.get("type", "output"), query.get("subfolder")
        )
        if path is None:
            return web.Response(status=status)
        return web.FileResponse(path, headers={"Content-Disposition": f'filename="{path.name}"'})

    async def system_stats(self, _: web.Request) -> web.StreamResponse:
        memory = self.state.memory
        ram = psutil.virtual_memory()
        loaded_bytes = sum(memory.loaded.values()) * BYTES_PER_MB
        device = {
            "name": f"Simulated {self.config.gpu.name} (comfy-router simulator)",
            "type": "cuda",
            "index": 0,
            "vram_total": memory.total_mb * BYTES_PER_MB,
            "vram_free": memory.free_mb * BYTES_PER_MB,
            "torch_vram_total": loaded_bytes,
            "torch_vram_free": 0,
        }
        system = {
            "os": sys.platform,
            "ram_total": ram.total,
            "ram_free": ram.available,
            **SYSTEM_VERSIONS,
            "python_version": sys.version,
            "pytorch_version": "none (comfy-router simulator)",
            "embedded_python": False,
            "argv": list(self.config.argv),
        }
        return web.json_response({"system": system, "devices": [device]})

    async def get_prompt(self, _: web.Request) -> web.StreamResponse:
        return web.json_response(self._status())

    async def post_prompt(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await read_json(request)
        except ValueError:
            return internal_error()
        if not isinstance(body, dict | list | str):
            return internal_error()  # ComfyUI's `"number" in json_data` raises for these
        number = self._next_number(body)
        if number is None:
            return internal_error()
        if not isinstance(body, dict) or "prompt" not in body:
            error = error_body("no_prompt", "No prompt provided", "No prompt provided")
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        return self._queue_prompt(body, number)

    def _next_number(self, body: Any) -> float | None:
        if isinstance(body, dict) and "number" in body:
            try:
                return float(body["number"])
            except (TypeError, ValueError):
                return None
        number = self._number
        if isinstance(body, dict) and body.get("front"):
            number = -number
        self._number += 1
        return number

    def _queue_prompt(self, body: JsonDict, number: float) -> web.StreamResponse:
        prompt = body["prompt"]
        if not isinstance(prompt, dict):
            return internal_error()
        prompt = copy.deepcopy(prompt)
        prompt_id = str(body["prompt_id"]) if "prompt_id" in body else str(uuid.uuid4())
        targets = body.get("partial_execution_targets")
        try:
            result = validate_prompt(
                prompt,
                self.state.defs.object_info(self.state.faults.broken_files),
                self.files.image_exists,
                targets if isinstance(targets, list) else None,
            )
        except Exception:
            log.exception("simulator: validation crashed")
            return internal_error()
        extra_data = copy.deepcopy(body.get("extra_data", {}))
        if not isinstance(extra_data, dict):
            return internal_error()
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        if not result.ok:
            return web.json_response({"error": result.error, "node_errors": result.node_errors}, status=400)
        for key in SENSITIVE_EXTRA_DATA_KEYS:
            extra_data.pop(key, None)
        extra_data["create_time"] = now_ms()
        self.queue.put(QueueItem(number, prompt_id, prompt, extra_data, result.outputs))
        return web.json_response(
            {"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors}
        )

    async def object_info(self, _: web.Request) -> web.StreamResponse:
        return web.json_response(self.state.defs.object_info(self.state.faults.broken_files))

    async def object_info_one(self, request: web.Request) -> web.StreamResponse:
        defs = self.state.defs
        return web.json_response(defs.one(request.match_info["node_class"], self.state.faults.broken_files))

    async def get_history(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        try:
            max_items = int(query["max_items"]) if "max_items" in query else None
            offset = int(query.get("offset", -1))
        except ValueError:
            return internal_error()
        return web.json_response(self.queue.history_json(max_items, offset))

    async def get_history_one(self, request: web.Request) -> web.StreamResponse:
        prompt_id = request.match_info["prompt_id"]
        entry = self.queue.history.get(prompt_id)
        return web.json_response({} if entry is None else {prompt_id: entry})

    async def post_history(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_or_none(request)
        if not isinstance(body, dict):
            return internal_error()
        if body.get("clear"):
            self.queue.history.clear()
        for prompt_id in body.get("delete", []) or []:
            self.queue.history.pop(prompt_id, None)
        return web.Response(status=200)

    async def get_queue(self, _: web.Request) -> web.StreamResponse:
        return web.json_response(self.queue.queue_json())

    async def post_queue(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_or_none(request)
        if not isinstance(body, dict):
            return internal_error()
        if body.get("clear"):
            self.queue.wipe()
        delete = body.get("delete")
        if isinstance(delete, list):
            self.queue.delete([str(p) for p in delete])
        return web.Response(status=200)

    async def post_interrupt(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_or_none(request)
        prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
        running = self.queue.running
        if prompt_id:
            # Targeted: only when that prompt is the one running (ComfyUI logs and ignores otherwise).
            if running is not None and running.prompt_id == prompt_id:
                self.state.interrupt.set()
        else:
            self.state.interrupt.set()
        return web.Response(status=200)

    async def post_free(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_or_none(request)
        if not isinstance(body, dict):
            return internal_error()
        for flag in ("unload_models", "free_memory"):
            if body.get(flag):
                self._pending_free[flag] = True
        if self.queue.running is None:
            self._apply_free()  # idle: the worker would apply the flags at once
        return web.Response(status=200)

    async def get_jobs(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        jobs = job_summaries(self.queue)
        statuses = [s for s in query.get("status", "").split(",") if s]
        if any(s not in JOB_STATUSES for s in statuses):
            return web.json_response(
                {"error": f"Invalid status filter; use {list(JOB_STATUSES)}"}, status=400
            )
        if statuses:
            jobs = [j for j in jobs if j["status"] in statuses]
        descending = query.get("sort_order", "desc") != "asc"
        jobs.sort(key=lambda j: (j.get("create_time") or 0, j["priority"]), reverse=descending)
        try:
            offset = max(0, int(query.get("offset", 0)))
            limit = int(query["limit"]) if "limit" in query else None
        except ValueError:
            return web.json_response({"error": "limit and offset must be integers"}, status=400)
        page = jobs[offset:] if limit is None else jobs[offset : offset + limit]
        pagination = {
            "offset": offset,
            "limit": limit,
            "total": len(jobs),
            "has_more": offset + len(page) < len(jobs),
        }
        return web.json_response({"jobs": page, "pagination": pagination})

    async def get_job(self, request: web.Request) -> web.StreamResponse:
        job = job_detail(self.queue, request.match_info["job_id"])
        if job is None:
            return web.json_response({"error": "Job not found"}, status=404)
        return web.json_response(job)

    @staticmethod
    async def _json_or_none(request: web.Request) -> Any:
        try:
            return await read_json(request)
        except ValueError:
            return None

    # ---- /sim routes ----

    async def post_faults(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_or_none(request)
        if not isinstance(body, dict):
            return web.json_response({"error": "the body must be a JSON object"}, status=400)
        try:
            self.set_faults(body)
        except FaultError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.state.faults.as_json())

    def set_faults(self, request: JsonDict) -> Faults:
        faults = apply_faults(self.state.faults, request)
        self.state.faults = faults
        if faults.hang:
            self._unhang.clear()
        else:
            self._unhang.set()
        log.info("simulator faults: %s", faults.as_json())
        return faults

    async def get_state(self, _: web.Request) -> web.StreamResponse:
        return web.json_response(self.state_json())

    def state_json(self) -> JsonDict:
        memory = self.state.memory
        running = self.queue.running
        return {
            "simulator": "comfy-router",
            "gpu": {
                "key": self.config.gpu.key,
                "name": self.config.gpu.name,
                "speed_factor": self.config.gpu.speed_factor,
                "vram_total_mb": memory.total_mb,
                "vram_used_mb": memory.used_mb,
                "vram_free_mb": memory.free_mb,
            },
            "loaded_models": [{"id": k, "vram_mb": v} for k, v in memory.loaded.items()],
            "queue": {
                "running": running.prompt_id if running is not None else None,
                "pending": [item.prompt_id for item in self.queue.pending()],
                "remaining": self.queue.remaining,
            },
            "node_cache_entries": len(self.state.cache),
            "slowdown": self.state.slowdown,
            "seed": self.config.seed,
            "custom_nodes": self.config.custom_nodes,
            "faults": self.state.faults.as_json(),
            "websockets": sorted(self.sockets),
        }


def _abort(sock: _Socket) -> None:
    """Cut the connection without a close handshake, like a crash or a network failure."""
    transport = sock.request.transport
    if transport is not None:
        transport.close()
