"""SocketHub: one WebSocket per client; each frame goes to the mailbox of the prompt it names."""

from __future__ import annotations

import json
import queue
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from router.comfyui.errors import ComfyUIConnectionError
from router.comfyui.socket_hub import SocketHub
from router.comfyui.ws import ChannelClosedError


class FakeSocket:
    """A WsChannel fed by the test; `drop()` makes the next receive fail as a lost socket does."""

    def __init__(self) -> None:
        self.frames: queue.SimpleQueue[str | bytes | Exception] = queue.SimpleQueue()
        self.closed = False

    def receive(self, timeout_s: float) -> str | bytes | None:
        try:
            frame = self.frames.get(timeout=timeout_s)
        except queue.Empty:
            return None
        if isinstance(frame, Exception):
            raise frame
        return frame

    def close(self) -> None:
        self.closed = True

    def send(self, kind: str, prompt_id: str | None = None, **data: object) -> None:
        body = {**data, **({"prompt_id": prompt_id} if prompt_id else {})}
        self.frames.put(json.dumps({"type": kind, "data": body}))

    def drop(self) -> None:
        self.frames.put(ChannelClosedError("reset by peer"))


class Connector:
    def __init__(self) -> None:
        self.sockets: list[FakeSocket] = []
        self.refuse = False

    def __call__(self, url: str, timeout_s: float) -> FakeSocket:
        if self.refuse:
            raise ComfyUIConnectionError("refused", url=url)
        self.sockets.append(FakeSocket())
        return self.sockets[-1]


def frames(box: object, n: int) -> list[dict[str, object]]:
    out = []
    for _ in range(n):
        raw = box.receive(2.0)  # type: ignore[attr-defined]
        assert isinstance(raw, str), f"expected a frame, got {raw!r}"
        out.append(json.loads(raw))
    return out


@pytest.fixture
def connect() -> Connector:
    return Connector()


def test_frames_go_to_the_prompt_they_name_and_broadcasts_to_none(connect: Connector) -> None:
    hub = SocketHub("ws://x/ws?clientId=c", connect, timeout_s=1.0)
    a, b = hub.subscribe("a"), hub.subscribe("b")
    (sock,) = connect.sockets  # one socket for both
    sock.send("status", status={"exec_info": {"queue_remaining": 2}})
    sock.frames.put(b"\x00\x00\x00\x01preview")
    sock.send("execution_start", "b")
    sock.send("progress", "a", value=1, max=2)
    sock.send("executing", "unknown-prompt", node=None)
    sock.send("executing", "a", node=None)
    assert [f["type"] for f in frames(a, 2)] == ["progress", "executing"]
    assert [f["type"] for f in frames(b, 1)] == ["execution_start"]
    assert a.receive(0.05) is None and b.receive(0.05) is None  # nothing else reached them
    a.close()
    b.close()
    hub.close()


def test_a_lost_socket_reaches_every_prompt_and_the_next_one_reconnects(connect: Connector) -> None:
    hub = SocketHub("ws://x/ws?clientId=c", connect, timeout_s=1.0)
    a, b = hub.subscribe("a"), hub.subscribe("b")
    connect.sockets[0].drop()
    for box in (a, b):
        with pytest.raises(ChannelClosedError, match="reset by peer"):
            box.receive(2.0)
        with pytest.raises(ChannelClosedError):  # and keeps saying so
            box.receive(0.0)
    c = hub.subscribe("c")
    assert len(connect.sockets) == 2
    connect.sockets[1].send("executing", "c", node=None)
    assert frames(c, 1)[0]["data"] == {"node": None, "prompt_id": "c"}
    c.close()
    hub.close()


def test_a_refused_handshake_raises_and_a_later_one_can_succeed(connect: Connector) -> None:
    hub = SocketHub("ws://x/ws?clientId=c", connect, timeout_s=1.0)
    connect.refuse = True
    with pytest.raises(ComfyUIConnectionError):
        hub.subscribe("a")
    connect.refuse = False
    hub.subscribe("a").close()
    assert len(connect.sockets) == 1
    hub.close()


def test_an_idle_socket_is_closed_and_a_busy_one_is_kept(connect: Connector) -> None:
    hub = SocketHub("ws://x/ws?clientId=c", connect, timeout_s=1.0, idle_close_s=0.1)
    busy = hub.subscribe("a")
    time.sleep(0.6)  # over idle_close_s, but a prompt is listening
    assert not connect.sockets[0].closed
    busy.close()
    deadline = time.monotonic() + 3
    while not connect.sockets[0].closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert connect.sockets[0].closed
    hub.subscribe("b").close()  # a new socket after the idle one was closed
    assert len(connect.sockets) == 2
    hub.close()


def test_a_renamed_mailbox_gets_the_frames_of_its_new_id(connect: Connector) -> None:
    hub = SocketHub("ws://x/ws?clientId=c", connect, timeout_s=1.0)
    box = hub.subscribe("asked-for")
    hub.rename(box, "given-by-comfyui")
    connect.sockets[0].send("executing", "asked-for", node="3")
    connect.sockets[0].send("executing", "given-by-comfyui", node=None)
    assert frames(box, 1)[0]["data"] == {"node": None, "prompt_id": "given-by-comfyui"}
    box.close()
    hub.close()


class SlowConnector(Connector):
    def __init__(self, delay_s: float, refuse: bool) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.refuse_slowly = refuse
        self.attempts = 0

    def __call__(self, url: str, timeout_s: float) -> FakeSocket:
        self.attempts += 1
        time.sleep(self.delay_s)
        if self.refuse_slowly:
            raise ComfyUIConnectionError("no answer", url=url)
        return super().__call__(url, timeout_s)


@pytest.mark.parametrize("refuse", [False, True], ids=["slow-handshake", "slow-refusal"])
def test_concurrent_first_prompts_share_one_handshake(refuse: bool) -> None:
    connect = SlowConnector(delay_s=0.3, refuse=refuse)
    hub = SocketHub("ws://x/ws?clientId=c", connect, timeout_s=1.0)

    def one(i: int) -> str:
        try:
            hub.subscribe(f"p{i}").close()
        except ComfyUIConnectionError as exc:
            return str(exc)
        return "ok"

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(one, range(20)))
    elapsed = time.monotonic() - t0
    assert connect.attempts == 1
    assert answers == (["no answer"] * 20 if refuse else ["ok"] * 20)
    assert elapsed < 0.3 * 3  # one handshake's wait, not one each in turn (20 x 0.3 s)
    hub.close()
