"""The ComfyUI client over real HTTP and WebSocket connections, against a fake that replays the
real v0.8.0 captures (tests/support/fake_comfyui.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from router.comfyui import (
    ComfyUIClient,
    ComfyUIConnectionError,
    ComfyUIHTTPError,
    ConnectionRefused,
    ExecutionFailed,
    HttpError,
    ImageRef,
    Interrupted,
    Invalid,
    OutOfMemory,
    Progress,
    SocketDropped,
    Succeeded,
    TimedOut,
)
from tests.support.fake_comfyui import SAMPLES_DIR, FakeComfyUI, Scenario, free_port, load_sample

pytestmark = pytest.mark.skipif(
    not SAMPLES_DIR.is_dir(), reason=f"ComfyUI captures not found at {SAMPLES_DIR} (shared/comfyui/samples)"
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeComfyUI]:
    with FakeComfyUI() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeComfyUI) -> FakeComfyUI:
    server.reset()
    return server


@pytest.fixture
def client(fake: FakeComfyUI) -> Iterator[ComfyUIClient]:
    c = ComfyUIClient(fake.base_url, timeout_s=5.0)
    yield c
    c.close()


def graph_of(sample: str) -> dict[str, Any]:
    graph: dict[str, Any] = load_sample(f"{sample}.prompt_request.json")["prompt"]
    return graph


def test_success_fetches_images_and_reports_node_progress(fake: FakeComfyUI, client: ComfyUIClient) -> None:
    fake.scenario = Scenario("empty_save")
    progress: list[Progress] = []
    with client.start(graph_of("empty_save")) as execution:
        outcome = execution.wait(timeout_s=5, on_progress=progress.append)
    assert isinstance(outcome, Succeeded), outcome
    assert outcome.prompt_id == execution.prompt_id
    assert outcome.images == [ImageRef("router_test_00001_.png", "", "output", "2")]
    assert outcome.cached is False
    assert outcome.started_at_s is not None and outcome.started_at_s <= outcome.duration_s
    assert set(outcome.timings.node_s) == {"1", "2"}
    assert [(p.event, p.node) for p in progress] == [("executing", "1"), ("executing", "2")]
    assert client.fetch_image(outcome.images[0]).startswith(PNG_MAGIC)
    assert fake.views[-1] == {"filename": "router_test_00001_.png", "subfolder": "", "type": "output"}
    # the socket was open, with our client_id, before the prompt was posted
    assert fake.ws_client_ids == [client.client_id]
    assert fake.socket_open_at_submit == [True]
    assert fake.prompts[0]["client_id"] == client.client_id
    assert fake.prompts[0]["prompt_id"] == execution.prompt_id
    assert "front" not in fake.prompts[0]


def test_client_chosen_prompt_id_and_front_are_sent(fake: FakeComfyUI, client: ComfyUIClient) -> None:
    fake.scenario = Scenario("empty_save")
    with client.start(graph_of("empty_save"), prompt_id="my-id-1", front=True) as execution:
        outcome = execution.wait(timeout_s=5)
    assert isinstance(outcome, Succeeded)
    assert outcome.prompt_id == "my-id-1"
    assert fake.prompts[0]["front"] is True


def test_identical_resubmission_is_reported_cached(fake: FakeComfyUI, client: ComfyUIClient) -> None:
    fake.scenario = Scenario("twice_1")
    outcome = client.run(graph_of("twice_1"), timeout_s=5)
    assert isinstance(outcome, Succeeded)
    assert outcome.cached is True
    assert outcome.images[0].filename == "router_twice_00001_.png"


def test_validation_400_is_invalid_with_node_errors(fake: FakeComfyUI, client: ComfyUIClient) -> None:
    fake.scenario = Scenario("err_bad_values")
    execution = client.start(graph_of("err_bad_values"))
    assert execution.submitted is False
    outcome = execution.wait(timeout_s=5)
    assert isinstance(outcome, Invalid)
    assert outcome.kind == "invalid"
    assert outcome.error_type == "prompt_outputs_failed_validation"
    assert outcome.node_errors["1"]["class_type"] == "EmptyImage"
    assert any("width" in line for line in outcome.problems())
    execution.cancel()  # nothing was queued: nothing to send
    assert fake.interrupts == [] and fake.queue_posts == []
    execution.close()
    # the client's socket id was released: the next execution uses client_id again
    fake.scenario = Scenario("empty_save")
    with client.start(graph_of("empty_save")) as again:
        assert again.client_id == client.client_id
        assert isinstance(again.wait(timeout_s=5), Succeeded)


def test_http_500_is_http_error(fake: FakeComfyUI, client: ComfyUIClient) -> None:
    fake.scenario = Scenario("err_not_json")
    outcome = client.run(graph_of("empty_save"), timeout_s=5)
    assert isinstance(outcome, HttpError)
    assert outcome.status == 500
    assert "Server got itself in trouble" in outcome.body_excerpt


def test_runtime_error_is_execution_error(fake: FakeComfyUI, client: ComfyUIClient) -> None:
    fake.scenario = Scenario("err_runtime_broken_ckpt")
    outcome = client.run(graph_of("err_runtime_broken_ckpt"), timeout_s=5)
    assert type(outcome) is ExecutionFailed
    assert outcome.kind == "execution_error"
    assert outcome.node_type == "CheckpointLoaderSimple"
    assert "header too large" in outcome.exception_message
    assert outcome.traceback


def _as_oom(message: dict[str, Any]) -> dict[str, Any]:
    if message["type"] == "execution_error":
        message["data"]["exception_type"] = "torch.OutOfMemoryError"
        message["data"]["exception_message"] = (
            "Allocation on device 0 would exceed allowed memory. (out of memory)\n"
            "Currently allocated     : 21.53 GiB\nRequested               : 3.00 GiB\n"
        )
    return message


def test_out_of_memory_is_oom(fake: FakeComfyUI, client: ComfyUIClient) -> None:
    fake.scenario = Scenario("err_runtime_broken_ckpt", patch=_as_oom)
    outcome = client.run(graph_of("err_runtime_broken_ckpt"), timeout_s=5)
    assert isinstance(outcome, OutOfMemory)
    assert outcome.kind == "oom"
    assert outcome.node_id == "4"


def test_on_progress_true_interrupts_the_prompt(fake: FakeComfyUI, client: ComfyUIClient) -> None:
    fake.scenario = Scenario("sd15_warm_s8", time_scale=0.05)
    seen: list[Progress] = []

    def on_progress(progress: Progress) -> bool:
        seen.append(progress)
        return progress.event == "progress" and progress.value >= 2  # "this will miss the deadline"

    with client.start(graph_of("sd15_warm_s8")) as execution:
        outcome = execution.wait(timeout_s=5, on_progress=on_progress)
    assert isinstance(outcome, Interrupted), outcome
    assert outcome.requested is True
    assert outcome.node_id == "3"
    assert outcome.node_type == "KSampler"
    assert fake.interrupts == [{"prompt_id": execution.prompt_id}]  # targeted, once
    steps = [p for p in seen if p.event == "progress"]
    assert [p.value for p in steps][:2] == [1, 2]
    assert len(steps) <= 3  # at most a step already in flight when the interrupt landed
    assert steps[1].max == 8
    assert steps[1].fraction == pytest.approx(0.25)
    assert steps[1].running_s is not None and steps[1].running_s >= 0


def test_connection_refused(fake: FakeComfyUI) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = ComfyUIClient(url, timeout_s=2.0)
    started = time.monotonic()
    execution = client.start({"1": {"class_type": "EmptyImage", "inputs": {}}})
    outcome = execution.wait(timeout_s=5)
    assert isinstance(outcome, ConnectionRefused)
    assert outcome.kind == "connection_refused"
    assert time.monotonic() - started < 1.5
    assert execution.submitted is False
    with pytest.raises(ComfyUIConnectionError) as raised:
        client.system_stats()
    assert raised.value.kind == "connection_refused"


def test_timeout_is_bounded_and_execution_stays_cancellable(fake: FakeComfyUI, client: ComfyUIClient) -> None:
    fake.scenario = Scenario("long_blur", hang_after=9)  # starts node 10, then never finishes
    with client.start(graph_of("long_blur")) as execution:
        started = time.monotonic()
        outcome = execution.wait(timeout_s=0.3)
        waited_s = time.monotonic() - started
        assert isinstance(outcome, TimedOut)
        assert 0.3 <= waited_s < 0.55
        assert outcome.started is True
        assert outcome.last_progress is not None and outcome.last_progress.node == "10"
        assert execution.outcome is None  # not final: wait again or cancel
        assert isinstance(execution.wait(timeout_s=0.05), TimedOut)
        execution.cancel()
        assert fake.interrupts == [{"prompt_id": execution.prompt_id}]
        assert fake.queue_posts == []  # it was running: nothing to delete from the queue
        final = execution.wait(timeout_s=5)
    assert isinstance(final, Interrupted)
    assert final.requested is True


def test_cancel_of_a_prompt_not_yet_started_deletes_it_from_the_queue(
    fake: FakeComfyUI, client: ComfyUIClient
) -> None:
    fake.scenario = Scenario("long_blur", hang_after=0)  # queued, never starts
    with client.start(graph_of("long_blur")) as execution:
        outcome = execution.wait(timeout_s=0.1)
        assert isinstance(outcome, TimedOut) and outcome.started is False
        execution.cancel()
    assert fake.queue_posts == [{"delete": [execution.prompt_id]}]
    assert fake.interrupts == [{"prompt_id": execution.prompt_id}]


def test_run_cancels_a_timed_out_prompt(fake: FakeComfyUI, client: ComfyUIClient) -> None:
    fake.scenario = Scenario("long_blur", hang_after=6)
    outcome = client.run(graph_of("long_blur"), timeout_s=0.2)
    assert isinstance(outcome, TimedOut)
    assert fake.interrupts == [{"prompt_id": outcome.prompt_id}]


def test_socket_dropped_mid_run_falls_back_to_history(fake: FakeComfyUI, client: ComfyUIClient) -> None:
    fake.scenario = Scenario("sd15_warm_s2", time_scale=0.05, drop_after=6)
    with client.start(graph_of("sd15_warm_s2")) as execution:
        outcome = execution.wait(timeout_s=5)
    assert isinstance(outcome, Succeeded), outcome
    assert outcome.images == [ImageRef("router_sd_00003_.png", "", "output", "9")]
    assert outcome.started_at_s is not None  # execution_start came before the drop
    assert outcome.timings.server_run_s is not None
    # /history was polled until the run (which went on unseen) had ended
    assert len(fake.history_requests) >= 2
    assert set(fake.history_requests) == {execution.prompt_id}


def test_socket_dropped_and_history_never_shows_the_end(fake: FakeComfyUI) -> None:
    client = ComfyUIClient(fake.base_url, history_poll_delays_s=(0.01, 0.02, 0.03))
    fake.scenario = Scenario("long_blur", drop_after=3, hang_after=5)
    with client.start(graph_of("long_blur")) as execution:
        outcome = execution.wait(timeout_s=5)
    assert isinstance(outcome, SocketDropped)
    assert outcome.kind == "socket_dropped"
    assert outcome.history_polls == 3
    assert outcome.duration_s < 1.0


def test_messages_of_another_prompt_are_ignored(fake: FakeComfyUI, client: ComfyUIClient) -> None:
    # The shorter foreign run (2 steps, its own execution_success and `executing` null) is
    # interleaved on our socket and ends first.
    fake.scenario = Scenario("sd15_warm_s8", time_scale=0.03, foreign_sample="sd15_warm_s2")
    progress: list[Progress] = []
    with client.start(graph_of("sd15_warm_s8")) as execution:
        outcome = execution.wait(timeout_s=5, on_progress=progress.append)
    assert fake.foreign_messages_sent > 10
    assert isinstance(outcome, Succeeded), outcome
    assert [p.value for p in progress if p.event == "progress"] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [i.filename for i in outcome.images] == ["router_sd_00005_.png"]  # ours, not the foreign 00003


def test_concurrent_executions_of_one_client_share_one_socket(
    fake: FakeComfyUI, client: ComfyUIClient
) -> None:
    """Each prompt gets its own events through the client's one socket (ComfyUI broadcasts every
    queue change to every socket: one socket per prompt made N prompts read O(N^2) frames)."""
    fake.scenario = Scenario("sd15_warm_s2", time_scale=0.02)
    progress: dict[str, list[int]] = {"first": [], "second": []}

    def on(name: str) -> Any:
        return lambda p: progress[name].append(p.value) if p.event == "progress" else None

    runs = [client.start(graph_of("sd15_warm_s2")) for _ in range(3)]
    with runs[0] as first, runs[1] as second, runs[2] as third:
        assert first.client_id == second.client_id == third.client_id == client.client_id
        outcomes = [
            first.wait(timeout_s=5, on_progress=on("first")),
            second.wait(timeout_s=5, on_progress=on("second")),
            third.wait(timeout_s=5),
        ]
    assert all(isinstance(o, Succeeded) for o in outcomes), outcomes
    assert len({o.prompt_id for o in outcomes}) == 3
    assert progress["first"] == progress["second"] == [1, 2]  # each its own two steps
    assert fake.ws_client_ids == [client.client_id]
    assert {p["client_id"] for p in fake.prompts} == {client.client_id}


def test_plain_calls(fake: FakeComfyUI, client: ComfyUIClient) -> None:
    stats = client.system_stats()
    assert stats.comfyui_version == "0.8.0" and stats.devices[0].name == "cpu"
    assert len(client.queue()) == 0
    assert set(client.object_info("KSampler")) == {"KSampler"}
    assert client.object_info("NoSuchNode") == {}
    assert len(client.object_info()) > 500
    assert "checkpoints" in client.models()
    assert "tiny-sd15-random.safetensors" in client.models("checkpoints")
    with pytest.raises(ComfyUIHTTPError) as raised:
        client.models("no_such_folder")
    assert raised.value.status == 404 and raised.value.kind == "http_error"
    assert client.history("unknown-prompt") is None
    client.free()
    assert fake.frees == [{"unload_models": True, "free_memory": True}]
    client.interrupt(None)
    assert fake.interrupts == [{}]
    client.delete_from_queue(["a", "b"])
    assert fake.queue_posts == [{"delete": ["a", "b"]}]
    assert client.upload_image(PNG_MAGIC + b"rest", "input face.png") == "input face.png"
    assert fake.uploads == ["input face.png"]
    with pytest.raises(ComfyUIHTTPError):
        client.view("missing.txt")


def test_history_of_a_finished_prompt(fake: FakeComfyUI, client: ComfyUIClient) -> None:
    fake.scenario = Scenario("empty_save")
    outcome = client.run(graph_of("empty_save"), timeout_s=5)
    entry = client.history(outcome.prompt_id)
    assert entry is not None and entry.status_str == "success"
    assert entry.images[0].filename == "router_test_00001_.png"


def test_a_finished_execution_frees_the_client_id(fake: FakeComfyUI, client: ComfyUIClient) -> None:
    fake.scenario = Scenario("empty_save")
    first = client.start(graph_of("empty_save"))
    assert isinstance(first.wait(timeout_s=5), Succeeded)
    with client.start(graph_of("empty_save")) as second:  # `first` is finished but not closed
        assert second.client_id == client.client_id
        assert isinstance(second.wait(timeout_s=5), Succeeded)
    first.close()
