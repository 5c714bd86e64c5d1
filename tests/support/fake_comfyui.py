"""A small fake ComfyUI that REPLAYS the real v0.8.0 captures in shared/comfyui/samples.

It runs an aiohttp app in a background thread on 127.0.0.1 (a free port), so the client under
test talks over real HTTP and WebSocket connections. `scenario` says which capture `POST /prompt`
replays and how to misbehave:

- the answer of /prompt is the capture's (200 with our prompt_id, or its 400 / 500 error);
- the capture's WebSocket messages are sent to the socket of the prompt's client_id, with the
  test's prompt_id and client_id substituted, at the capture's timing times `time_scale`;
- `GET /history/<id>` answers the capture's history once the replay has ended, `{}` before;
- `hang_after` stops the replay (the prompt never finishes), `drop_after` closes the socket while
  the replay goes on unseen, `patch` rewrites messages (e.g. an OOM), `foreign_sample`
  interleaves another prompt's messages on the same socket;
- a targeted `POST /interrupt` for the replaying prompt ends it like ComfyUI does (at the next
  message: `execution_interrupted`, a status, `executing` null) when `interruptible`.

Every request is recorded (`prompts`, `interrupts`, `queue_posts`, `frees`, `uploads`, `views`,
`ws_client_ids`, `socket_open_at_submit`, `history_requests`) for assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import WSMsgType, web

SAMPLES_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "comfyui" / "samples"
PNG_SAMPLE = "empty_save.view_2_router_test_00001_.png"

MessagePatch = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class Scenario:
    sample: str = "empty_save"
    time_scale: float = 0.01
    hang_after: int | None = None
    drop_after: int | None = None
    patch: MessagePatch | None = None
    foreign_sample: str | None = None
    interruptible: bool = True


@dataclass
class _Run:
    prompt_id: str
    client_id: str
    number: int
    graph: dict[str, Any]
    scenario: Scenario
    mapping: dict[str, str]
    finished: bool = False
    interrupted: bool = False
    interrupt_requested: bool = False
    current_node: str | None = None
    executed: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


def free_port() -> int:
    """A port nothing listens on (bound then released): connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def load_sample(name: str) -> Any:
    return json.loads((SAMPLES_DIR / name).read_text(encoding="utf-8"))


def unwrap(obj: Any) -> Any:
    """Some captures are `{"http_status": ..., "body": ...}`, others the bare body."""
    if isinstance(obj, dict) and "http_status" in obj and "body" in obj:
        return obj["body"]
    return obj


def ws_records(sample: str) -> list[dict[str, Any]]:
    lines = (SAMPLES_DIR / f"{sample}.ws.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def substitute(obj: Any, mapping: dict[str, str]) -> Any:
    """Replace every string equal to a key of `mapping` (ids), keys of dicts included."""
    if isinstance(obj, str):
        return mapping.get(obj, obj)
    if isinstance(obj, list):
        return [substitute(x, mapping) for x in obj]
    if isinstance(obj, dict):
        return {mapping.get(k, k): substitute(v, mapping) for k, v in obj.items()}
    return obj


class FakeComfyUI:
    def __init__(self, samples_dir: Path = SAMPLES_DIR) -> None:
        self.samples_dir = samples_dir
        self.scenario = Scenario()
        self.prompts: list[dict[str, Any]] = []
        self.interrupts: list[dict[str, Any]] = []
        self.queue_posts: list[dict[str, Any]] = []
        self.frees: list[dict[str, Any]] = []
        self.uploads: list[str] = []
        self.views: list[dict[str, str]] = []
        self.ws_client_ids: list[str] = []
        self.socket_open_at_submit: list[bool] = []
        self.history_requests: list[str] = []
        self.foreign_messages_sent = 0
        self.port = 0
        self._runs: dict[str, _Run] = {}
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._numbers = itertools.count(100)
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeComfyUI:
        self._thread = threading.Thread(target=self._serve, name="fake-comfyui", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake ComfyUI did not start")
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> FakeComfyUI:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def reset(self, scenario: Scenario | None = None) -> None:
        """Forget runs and recorded requests (between tests sharing one server); set the scenario."""
        if self._thread is not None:
            asyncio.run_coroutine_threadsafe(self._forget_runs(), self._loop).result(10)
        self.scenario = scenario or Scenario()
        for records in (self.prompts, self.interrupts, self.queue_posts, self.frees, self.uploads):
            records.clear()
        self.views.clear()
        self.ws_client_ids.clear()
        self.socket_open_at_submit.clear()
        self.history_requests.clear()
        self.foreign_messages_sent = 0

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._setup())
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _setup(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self._ws)
        app.router.add_post("/prompt", self._prompt)
        app.router.add_get("/history/{prompt_id}", self._history)
        app.router.add_get("/view", self._view)
        app.router.add_post("/interrupt", self._interrupt)
        app.router.add_get("/queue", self._queue_get)
        app.router.add_post("/queue", self._queue_post)
        app.router.add_post("/free", self._free)
        app.router.add_post("/upload/image", self._upload)
        app.router.add_get("/system_stats", self._system_stats)
        app.router.add_get("/object_info", self._object_info)
        app.router.add_get("/object_info/{node_class}", self._object_info)
        app.router.add_get("/models", self._models)
        app.router.add_get("/models/{folder}", self._models)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def _forget_runs(self) -> None:
        for run in self._runs.values():
            if run.task is not None:
                run.task.cancel()
        self._runs.clear()

    async def _shutdown(self) -> None:
        await self._forget_runs()
        for ws in list(self._sockets.values()):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- WebSocket ------------------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        # ComfyUI keeps one socket per clientId: a new one replaces the old.
        client_id = request.query.get("clientId") or uuid.uuid4().hex
        self._sockets[client_id] = ws
        self.ws_client_ids.append(client_id)
        await ws.send_json(
            {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": client_id}}
        )
        async for message in ws:
            if message.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                break
        if self._sockets.get(client_id) is ws:
            del self._sockets[client_id]
        return ws

    async def _send(self, client_id: str, message: dict[str, Any]) -> None:
        ws = self._sockets.get(client_id)
        if ws is None or ws.closed:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_json(message)

    # --- /prompt and the replay -----------------------------------------------------------------

    async def _prompt(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.text())
        except ValueError:
            return web.Response(status=500, text="500 Internal Server Error\n\nServer got itself in trouble")
        self.prompts.append(body)
        if isinstance(body, dict):
            self.socket_open_at_submit.append(str(body.get("client_id")) in self._sockets)
        if not isinstance(body, dict) or "prompt" not in body:
            return _json_response(unwrap(load_sample("err_no_prompt_key.prompt_response.json")), 400)
        scenario = self.scenario
        text_path = self.samples_dir / f"{scenario.sample}.prompt_response.txt"
        if text_path.exists():
            head, _, text = text_path.read_text(encoding="utf-8").partition("\n")
            return web.Response(status=int(head.split()[1]), text=text)
        answer = load_sample(f"{scenario.sample}.prompt_response.json")
        if answer["http_status"] != 200:
            return _json_response(answer["body"], answer["http_status"])
        sample_request = load_sample(f"{scenario.sample}.prompt_request.json")
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        client_id = str(body.get("client_id") or "")
        run = _Run(
            prompt_id=prompt_id,
            client_id=client_id,
            number=next(self._numbers),
            graph=body["prompt"],
            scenario=scenario,
            mapping={answer["body"]["prompt_id"]: prompt_id, sample_request.get("client_id", ""): client_id},
        )
        self._runs[prompt_id] = run
        run.task = asyncio.get_running_loop().create_task(self._replay(run))
        return _json_response({"prompt_id": prompt_id, "number": run.number, "node_errors": {}}, 200)

    async def _replay(self, run: _Run) -> None:
        scenario = run.scenario
        timeline = [
            (r["t"], r["msg"], False) for r in ws_records(scenario.sample) if "sid" not in r["msg"]["data"]
        ]
        foreign_mapping: dict[str, str] = {}
        if scenario.foreign_sample:
            foreign_id = load_sample(f"{scenario.foreign_sample}.prompt_response.json")["body"]["prompt_id"]
            foreign_mapping = {foreign_id: f"foreign-{uuid.uuid4()}"}
            records = ws_records(scenario.foreign_sample)
            timeline += [(r["t"], r["msg"], True) for r in records if "sid" not in r["msg"]["data"]]
            timeline.sort(key=lambda item: item[0])
        loop = asyncio.get_running_loop()
        start = loop.time()
        own_sent = 0
        for t, raw_message, foreign in timeline:
            await asyncio.sleep(max(0.0, start + t * scenario.time_scale - loop.time()))
            if run.interrupt_requested:
                await self._interrupted_tail(run)
                return
            if foreign:
                self.foreign_messages_sent += 1
                await self._send(run.client_id, substitute(raw_message, foreign_mapping))
                continue
            if scenario.hang_after is not None and own_sent >= scenario.hang_after:
                return  # the prompt never finishes
            if scenario.drop_after is not None and own_sent == scenario.drop_after:
                ws = self._sockets.pop(run.client_id, None)
                if ws is not None:
                    await ws.close()
            message = substitute(raw_message, run.mapping)
            if scenario.patch is not None:
                message = scenario.patch(message)
            self._track(run, message)
            await self._send(run.client_id, message)
            own_sent += 1
        run.finished = True

    def _track(self, run: _Run, message: dict[str, Any]) -> None:
        if message["type"] == "executing" and message["data"].get("node") is not None:
            if run.current_node is not None:
                run.executed.append(run.current_node)
            run.current_node = str(message["data"]["node"])

    async def _interrupted_tail(self, run: _Run) -> None:
        node = run.current_node
        node_type = run.graph.get(node, {}).get("class_type") if node else None
        await self._send(
            run.client_id,
            {
                "type": "execution_interrupted",
                "data": {
                    "prompt_id": run.prompt_id,
                    "node_id": node,
                    "node_type": node_type,
                    "executed": list(run.executed),
                    "timestamp": 0,
                },
            },
        )
        await self._send(
            run.client_id, {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}}
        )
        await self._send(
            run.client_id, {"type": "executing", "data": {"node": None, "prompt_id": run.prompt_id}}
        )
        run.interrupted = True
        run.finished = True

    # --- other routes ---------------------------------------------------------------------------

    async def _history(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        self.history_requests.append(prompt_id)
        run = self._runs.get(prompt_id)
        if run is None or not run.finished:
            return _json_response({}, 200)
        entry = substitute(load_sample(f"{run.scenario.sample}.history.json"), run.mapping)
        if run.interrupted:
            record = entry[prompt_id]
            record["outputs"] = {}
            record["status"] = {
                "status_str": "error",
                "completed": False,
                "messages": [
                    ["execution_start", {"prompt_id": prompt_id, "timestamp": 0}],
                    ["execution_interrupted", {"prompt_id": prompt_id, "node_id": run.current_node}],
                ],
            }
        return _json_response(entry, 200)

    async def _view(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.views.append(query)
        if not query.get("filename", "").endswith(".png"):
            return web.Response(status=404)
        return web.Response(body=(self.samples_dir / PNG_SAMPLE).read_bytes(), content_type="image/png")

    async def _interrupt(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        self.interrupts.append(body)
        target = body.get("prompt_id")
        for run in self._runs.values():
            if (
                not run.finished
                and run.scenario.interruptible
                and (target is None or target == run.prompt_id)
            ):
                run.interrupt_requested = True
                if run.task is not None and run.task.done():
                    # a hung replay: ComfyUI would stop at the next check; end it now
                    await self._interrupted_tail(run)
        return web.Response(status=200)

    async def _queue_get(self, _: web.Request) -> web.Response:
        running = [
            [run.number, run.prompt_id, run.graph, {"client_id": run.client_id}, []]
            for run in self._runs.values()
            if not run.finished
        ]
        return _json_response({"queue_running": running[:1], "queue_pending": running[1:]}, 200)

    async def _queue_post(self, request: web.Request) -> web.Response:
        self.queue_posts.append(await _json_body(request))
        return web.Response(status=200)

    async def _free(self, request: web.Request) -> web.Response:
        self.frees.append(await _json_body(request))
        return web.Response(status=200)

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("image")
        filename = getattr(upload, "filename", None)
        if not isinstance(filename, str):
            return web.Response(status=400)
        self.uploads.append(filename)
        return _json_response({"name": filename, "subfolder": "", "type": "input"}, 200)

    async def _system_stats(self, _: web.Request) -> web.Response:
        return _json_response(load_sample("system_stats.json"), 200)

    async def _object_info(self, request: web.Request) -> web.Response:
        everything = load_sample("object_info_all.json")
        node_class = request.match_info.get("node_class")
        if node_class is None:
            return _json_response(everything, 200)
        return _json_response({node_class: everything[node_class]} if node_class in everything else {}, 200)

    async def _models(self, request: web.Request) -> web.Response:
        folders = load_sample("models.json")
        folder = request.match_info.get("folder")
        if folder is None:
            return _json_response(folders, 200)
        if folder not in folders:
            return web.Response(status=404)
        files = load_sample("models_checkpoints_with_files.json") if folder == "checkpoints" else []
        return _json_response(files, 200)


def _json_response(body: Any, status: int) -> web.Response:
    return web.json_response(copy.deepcopy(body), status=status)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.text() or "{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
