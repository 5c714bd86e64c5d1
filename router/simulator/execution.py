"""Running one queued prompt the way ComfyUI 0.8.0 does, with simulated durations.

Message sequence (to the prompt's `client_id` only; `progress`/`progress_state` are broadcast when
there is none, as in ComfyUI): `execution_start`, `execution_cached`, then per node `progress_state`
(running), `executing`, per sampler step `progress_state` + `progress`, `executed` for output nodes,
`progress_state` (finished); then `execution_success`, or `execution_error` / `execution_interrupted`.
Outputs of executed nodes are cached by signature like ComfyUI's classic cache (only the nodes of the
latest prompt are kept), so a warm resubmission skips the loaders and an identical one is served whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from router.catalog import Catalog
from router.simulator.faults import Faults
from router.simulator.files import FileStore, SavePathError, render, temp_prefix
from router.simulator.gpu import GpuMemory, GpuSpec, OutOfMemoryError
from router.simulator.graph import DependencyCycleError, ExecutionOrder, is_link, node_inputs, node_signatures
from router.simulator.nodes import NodeDefinitions
from router.simulator.prompt_queue import QueueItem
from router.simulator.shapes import SAMPLERS, Pixels, ShapeInference
from router.simulator.timing import RunPlan, make_plan

JsonDict = dict[str, Any]
Emit = Callable[[str, JsonDict, str | None], None]
log = logging.getLogger("router.simulator")

OUTPUT_KINDS: dict[str, str] = {"SaveImage": "output", "PreviewImage": "temp"}
OOM_TIPS = (
    "This error means you ran out of memory on your GPU.\n\n"
    "TIPS: If the workflow worked before you might have accidentally set the batch_size to a large number."
)
EXECUTE_TRACEBACK = [
    '  File "/opt/ComfyUI/execution.py", line 518, in execute\n'
    "    output_data, output_ui, has_subgraph, has_pending_tasks = await get_output_data("
    "prompt_id, unique_id, obj, input_data_all, execution_block_cb=execution_block_cb, "
    "pre_execute_cb=pre_execute_cb, v3_data=v3_data)\n",
    '  File "/opt/ComfyUI/execution.py", line 329, in get_output_data\n'
    "    return_values = await _async_map_node_over_list(prompt_id, unique_id, obj, input_data_all, "
    "obj.FUNCTION, allow_interrupt=True, execution_block_cb=execution_block_cb, "
    "pre_execute_cb=pre_execute_cb, v3_data=v3_data)\n",
    '  File "/opt/ComfyUI/execution.py", line 291, in process_inputs\n    result = f(**inputs)\n',
]
LOAD_FAILURE_TYPE = "safetensors._safetensors_rust.SafetensorError"
LOAD_FAILURE_MESSAGE = "Error while deserializing header: header too large\n"
LOAD_TRACEBACK = [
    '  File "/opt/ComfyUI/comfy/sd.py", line 1348, in load_checkpoint_guess_config\n'
    "    sd, metadata = comfy.utils.load_torch_file(ckpt_path, return_metadata=True)\n",
    '  File "/opt/ComfyUI/comfy/utils.py", line 64, in load_torch_file\n'
    '    with safetensors.safe_open(ckpt, framework="pt", device=device.type) as f:\n',
]
SAMPLER_TRACEBACK = [
    '  File "/opt/ComfyUI/nodes.py", line 1525, in sample\n'
    "    return common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, "
    "latent_image, denoise=denoise)\n",
    '  File "/opt/ComfyUI/comfy/model_management.py", line 704, in load_models_gpu\n'
    "    loaded_model.model_load(lowvram_model_memory, force_patch_weights=force_patch_weights)\n",
    '  File "/opt/ComfyUI/comfy/model_patcher.py", line 682, in load\n    x[2].to(device_to)\n',
]
# How a linked input looks in `current_inputs` of an execution_error (ComfyUI prints the objects).
LINKED_REPR: dict[str, str] = {
    "MODEL": "<comfy.model_patcher.ModelPatcher object at 0x{addr}>",
    "CLIP": "<comfy.sd.CLIP object at 0x{addr}>",
    "VAE": "<comfy.sd.VAE object at 0x{addr}>",
    "CONDITIONING": "[[tensor(...), {{'pooled_output': tensor(...)}}]]",
    "LATENT": "{{'samples': tensor(...)}}",
    "IMAGE": "tensor(...)",
    "MASK": "tensor(...)",
}


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class CacheEntry:
    ui: JsonDict | None


class InterruptProcessingError(Exception):
    def __init__(self, node_id: str) -> None:
        super().__init__(f"interrupted at node {node_id}")
        self.node_id = node_id


class NodeExecutionError(Exception):
    def __init__(self, node_id: str, exception_type: str, message: str, traceback: list[str]) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.exception_type = exception_type
        self.message = message
        self.traceback = traceback


@dataclass
class SimState:
    """Everything a run reads and changes; owned by the server's event loop thread."""

    catalog: Catalog
    gpu: GpuSpec
    memory: GpuMemory
    files: FileStore
    defs: NodeDefinitions
    base_slowdown: float
    seed: int
    rng: random.Random  # duration noise only, so file names do not shift the seeded sequence
    name_rng: random.Random = field(default_factory=random.Random)
    faults: Faults = field(default_factory=Faults)
    cache: dict[str, CacheEntry] = field(default_factory=dict)
    interrupt: asyncio.Event = field(default_factory=asyncio.Event)
    running_client: str | None = None
    last_node: str | None = None

    @property
    def slowdown(self) -> float:
        return self.faults.slowdown if self.faults.slowdown is not None else self.base_slowdown

    def unload_models(self) -> list[str]:
        return self.memory.unload_all()


@dataclass
class Outcome:
    success: bool
    outputs: JsonDict
    meta: JsonDict
    messages: list[list[Any]]

    def status(self) -> JsonDict:
        return {
            "status_str": "success" if self.success else "error",
            "completed": self.success,
            "messages": self.messages,
        }


class ProgressRegistry:
    """ComfyUI's per-prompt node states, in the order nodes were first touched."""

    def __init__(self, prompt_id: str) -> None:
        self.prompt_id = prompt_id
        self._nodes: dict[str, JsonDict] = {}

    def _entry(self, node_id: str) -> JsonDict:
        return self._nodes.setdefault(node_id, {"state": "pending", "value": 0, "max": 1})

    def start(self, node_id: str) -> None:
        self._entry(node_id).update(state="running", value=0.0, max=1.0)

    def update(self, node_id: str, value: int, maximum: int) -> None:
        self._entry(node_id).update(state="running", value=value, max=maximum)

    def finish(self, node_id: str) -> None:
        entry = self._entry(node_id)
        entry.update(state="finished", value=entry["max"])

    def message(self) -> JsonDict:
        nodes = {
            node_id: {
                "value": entry["value"],
                "max": entry["max"],
                "state": entry["state"],
                "node_id": node_id,
                "prompt_id": self.prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
            }
            for node_id, entry in self._nodes.items()
            if entry["state"] != "pending"
        }
        return {"prompt_id": self.prompt_id, "nodes": nodes}


class _Run:
    """One prompt's execution: its messages, progress and bookkeeping."""

    def __init__(self, item: QueueItem, emit: Emit, shapes: ShapeInference, sigs: dict[str, str]) -> None:
        self.item = item
        self.prompt_id = item.prompt_id
        self.prompt = item.prompt
        self.client_id = item.client_id
        self._emit = emit
        self.shapes = shapes
        self.sigs = sigs
        self.progress = ProgressRegistry(item.prompt_id)
        self.messages: list[list[Any]] = []
        self.executed: list[str] = []
        self.ui_outputs: dict[str, JsonDict] = {}
        self.load_paid = 0.0
        self.placed = False
        self.steps_done = 0

    def class_of(self, node_id: str) -> str:
        class_type: str = self.prompt[node_id]["class_type"]
        return class_type

    def send(self, event: str, data: JsonDict) -> None:
        """Per-node events: only for a prompt with a client_id, only to that client."""
        if self.client_id is not None:
            self._emit(event, data, self.client_id)

    def broadcast_progress(self, event: str, data: JsonDict) -> None:
        """`progress`/`progress_state` go to everyone when the prompt has no client_id (ComfyUI quirk)."""
        self._emit(event, data, self.client_id)

    def message(self, event: str, data: JsonDict, *, broadcast: bool = False) -> None:
        data = {**data, "timestamp": now_ms()}
        self.messages.append([event, data])
        if self.client_id is not None or broadcast:
            self._emit(event, data, self.client_id)

    def progress_state(self) -> None:
        self.broadcast_progress("progress_state", self.progress.message())


class Executor:
    def __init__(self, state: SimState, emit: Emit, drop_sockets: Callable[[], None]) -> None:
        self.state = state
        self._emit = emit
        self._drop_sockets = drop_sockets

    async def execute(self, item: QueueItem) -> Outcome:
        state = self.state
        state.interrupt.clear()
        state.running_client = item.client_id
        sigs = node_signatures(item.prompt, self._salt(item.prompt))
        defs = state.defs.object_info(state.faults.broken_files)
        output_counts = {name: len(info["output"]) for name, info in defs.items()}
        shapes = ShapeInference(item.prompt, output_counts, state.files.image_size)
        run = _Run(item, self._emit, shapes, sigs)
        run.message("execution_start", {"prompt_id": run.prompt_id})
        self._clean_cache(set(sigs.values()))
        cached = [n for n in item.prompt if sigs[n] in state.cache]
        run.message("execution_cached", {"nodes": cached, "prompt_id": run.prompt_id})
        plan = make_plan(state.catalog, item.prompt, shapes, set(cached), state.gpu.speed_factor, state.rng)
        success = await self._run_nodes(run, plan, defs)
        state.running_client = None
        state.last_node = None
        outputs = dict(run.ui_outputs)
        meta = {
            n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n}
            for n in run.ui_outputs
        }
        return Outcome(success, outputs, meta, run.messages)

    def _salt(self, prompt: JsonDict) -> Callable[[str], Any]:
        """LoadImage outputs change with the file behind the name (ComfyUI hashes it in IS_CHANGED)."""

        def salt(node_id: str) -> Any:
            if prompt[node_id].get("class_type") not in ("LoadImage", "LoadImageMask"):
                return None
            path = self.state.files.input_path(str(node_inputs(prompt, node_id).get("image", "")))
            return None if path is None else [path.stat().st_mtime_ns, path.stat().st_size]

        return salt

    def _clean_cache(self, keep: set[str]) -> None:
        for key in [k for k in self.state.cache if k not in keep]:
            del self.state.cache[key]

    async def _run_nodes(self, run: _Run, plan: RunPlan, defs: JsonDict) -> bool:
        order = ExecutionOrder(
            run.prompt,
            is_cached=lambda n: run.sigs.get(n) in self.state.cache,
            is_output=lambda n: bool(defs.get(run.prompt[n].get("class_type"), {}).get("output_node")),
        )
        for output_id in run.item.outputs:
            order.add(output_id)
        try:
            while (node_id := order.next()) is not None:
                await self._node(run, plan, node_id)
                order.complete(node_id)
        except InterruptProcessingError as exc:
            self._report_interrupt(run, exc.node_id)
            return False
        except NodeExecutionError as exc:
            self._report_failure(run, exc, defs)
            return False
        except DependencyCycleError as exc:
            node_id = order.pending()[0]
            self._report_failure(run, NodeExecutionError(node_id, "DependencyCycleError", str(exc), []), defs)
            return False
        run.message("execution_success", {"prompt_id": run.prompt_id})
        return True

    async def _node(self, run: _Run, plan: RunPlan, node_id: str) -> None:
        entry = self.state.cache.get(run.sigs[node_id])
        if entry is not None:
            run.send(
                "executed",
                {"node": node_id, "display_node": node_id, "output": entry.ui, "prompt_id": run.prompt_id},
            )
            if entry.ui is not None:
                run.ui_outputs[node_id] = entry.ui
            run.progress.finish(node_id)
            run.progress_state()
            return
        run.progress.start(node_id)
        run.progress_state()
        self.state.last_node = node_id
        run.send("executing", {"node": node_id, "display_node": node_id, "prompt_id": run.prompt_id})
        if self.state.interrupt.is_set():
            raise InterruptProcessingError(node_id)
        ui = await self._work(run, plan, node_id)
        if ui is not None:
            run.send(
                "executed",
                {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": run.prompt_id},
            )
            run.ui_outputs[node_id] = ui
        run.progress.finish(node_id)
        run.progress_state()
        self.state.cache[run.sigs[node_id]] = CacheEntry(ui)
        run.executed.append(node_id)

    async def _work(self, run: _Run, plan: RunPlan, node_id: str) -> JsonDict | None:
        class_type = run.class_of(node_id)
        broken = set(self.state.faults.broken_files)
        if broken and any(
            isinstance(v, str) and v in broken for v in node_inputs(run.prompt, node_id).values()
        ):
            raise NodeExecutionError(
                node_id, LOAD_FAILURE_TYPE, LOAD_FAILURE_MESSAGE, EXECUTE_TRACEBACK + LOAD_TRACEBACK
            )
        model = plan.model
        share = plan.load_shares.get(node_id, 0.0)
        if model is not None and share > 0 and not self.state.memory.is_loaded(model.id):
            await self._sleep(plan.load_seconds(share))
            run.load_paid += share
        if model is not None and not run.placed and class_type in plan.placement_classes:
            await self._place(run, plan, node_id)
        if class_type in OUTPUT_KINDS:
            # Drawing and encoding the PNG is real work: it overlaps the simulated time, not adds to it.
            saving = asyncio.create_task(self._save(run, node_id, OUTPUT_KINDS[class_type]))
            await self._sleep(plan.base_seconds(node_id))
            return await saving
        await self._sleep(plan.base_seconds(node_id))
        if class_type in SAMPLERS:
            await self._sample(run, plan, node_id)
        return None

    async def _place(self, run: _Run, plan: RunPlan, node_id: str) -> None:
        """Put the model on the GPU: pay what is left of its load, evict others, or fail with OOM."""
        model = plan.model
        assert model is not None
        memory = self.state.memory
        if not memory.is_loaded(model.id):
            await self._sleep(plan.load_seconds(max(0.0, 1.0 - run.load_paid)))
            run.load_paid = 1.0
        try:
            if self.state.faults.oom_next > 0:
                self.state.faults.oom_next -= 1
                raise memory.oom_error(model.vram_mb)
            placement = memory.place(model.id, model.vram_mb)
        except OutOfMemoryError as exc:
            # ComfyUI unloads every model after an OOM; the memory is free again.
            memory.unload_all()
            message = f"{exc}\n{OOM_TIPS}"
            raise NodeExecutionError(
                node_id, exc.exception_type, message, EXECUTE_TRACEBACK + SAMPLER_TRACEBACK
            ) from exc
        if placement.evicted:
            log.info("simulator: loaded %s, evicted %s", model.id, ", ".join(placement.evicted))
        run.placed = True

    async def _sample(self, run: _Run, plan: RunPlan, node_id: str) -> None:
        work = run.shapes.sampler_work(node_id)
        step_s = plan.step_seconds(work)
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        for step in range(1, work.steps + 1):
            deadline += step_s * self.state.slowdown
            await self._wait_interruptible(node_id, deadline)
            run.progress.update(node_id, step, work.steps)
            run.progress_state()
            run.broadcast_progress(
                "progress", {"value": step, "max": work.steps, "prompt_id": run.prompt_id, "node": node_id}
            )
            run.steps_done += 1
            self._maybe_drop_sockets(run)

    def _maybe_drop_sockets(self, run: _Run) -> None:
        limit = self.state.faults.drop_ws_after_steps
        if limit is not None and run.steps_done >= limit:
            self.state.faults.drop_ws_after_steps = None
            log.info("simulator fault: dropping every WebSocket after %d steps", run.steps_done)
            self._drop_sockets()

    async def _wait_interruptible(self, node_id: str, deadline: float) -> None:
        """Sleep until `deadline`; an interrupt ends the step at once (samplers check it every step)."""
        interrupt = self.state.interrupt
        timeout = deadline - asyncio.get_running_loop().time()
        if not interrupt.is_set() and timeout > 0:
            try:
                await asyncio.wait_for(interrupt.wait(), timeout)
            except TimeoutError:
                return
        if interrupt.is_set():
            raise InterruptProcessingError(node_id)

    async def _save(self, run: _Run, node_id: str, kind: str) -> JsonDict:
        inputs = node_inputs(run.prompt, node_id)
        pixels = run.shapes.pixels(node_id, "images")
        if pixels is None:
            raise NodeExecutionError(
                node_id, "AttributeError", "'NoneType' object has no attribute 'cpu'", list(EXECUTE_TRACEBACK)
            )
        if kind == "output":
            prefix = str(inputs.get("filename_prefix", "ComfyUI"))
        else:
            prefix = temp_prefix(self.state.name_rng)
        metadata: JsonDict = {"prompt": run.prompt}
        extra_png = run.item.extra_data.get("extra_pnginfo")
        if isinstance(extra_png, dict):
            metadata.update(extra_png)
        files = self.state.files
        try:
            saved = await asyncio.get_running_loop().run_in_executor(
                None, _render_and_save, files, pixels, prefix, kind, metadata
            )
        except SavePathError as exc:
            raise NodeExecutionError(node_id, "Exception", str(exc), list(EXECUTE_TRACEBACK)) from exc
        return {"images": saved}

    async def _sleep(self, seconds: float) -> None:
        seconds *= self.state.slowdown
        if seconds > 0:
            await asyncio.sleep(seconds)

    def _report_interrupt(self, run: _Run, node_id: str) -> None:
        data = {
            "prompt_id": run.prompt_id,
            "node_id": node_id,
            "node_type": run.class_of(node_id),
            "executed": list(run.executed),
        }
        run.message("execution_interrupted", data, broadcast=True)

    def _report_failure(self, run: _Run, failure: NodeExecutionError, defs: JsonDict) -> None:
        node_id = failure.node_id
        data = {
            "prompt_id": run.prompt_id,
            "node_id": node_id,
            "node_type": run.class_of(node_id),
            "executed": list(run.executed),
            "exception_message": failure.message,
            "exception_type": failure.exception_type,
            "traceback": failure.traceback,
            "current_inputs": _current_inputs(run.prompt, node_id, defs),
            "current_outputs": list(run.prompt),
        }
        run.message("execution_error", data)
        log.info("simulator: prompt %s failed at node %s: %s", run.prompt_id, node_id, failure.exception_type)


def _render_and_save(
    files: FileStore, pixels: Pixels, prefix: str, kind: str, metadata: JsonDict
) -> list[JsonDict]:
    images = [render(pixels, index, files) for index in range(max(1, pixels.batch))]
    return [saved.as_ui() for saved in files.save_images(images, prefix, kind, metadata)]


def _current_inputs(prompt: JsonDict, node_id: str, defs: JsonDict) -> JsonDict:
    """The failing node's inputs as ComfyUI formats them: literals as is, linked objects printed."""
    out: JsonDict = {}
    for name, value in node_inputs(prompt, node_id).items():
        if not is_link(value):
            out[name] = [value]
            continue
        source_class = prompt.get(value[0], {}).get("class_type", "")
        types = defs.get(source_class, {}).get("output", [])
        socket = int(value[1])
        type_name = types[socket] if 0 <= socket < len(types) else ""
        addr = hashlib.sha256(f"{value[0]}:{socket}".encode()).hexdigest()[:12]
        out[name] = [LINKED_REPR.get(type_name, "<object>").format(addr=addr)]
    return out
