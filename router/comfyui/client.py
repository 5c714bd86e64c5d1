"""HTTP + WebSocket client of one ComfyUI backend.

Plain calls (`system_stats()`, `queue()`, `history()`...) return typed values and raise
`ComfyUIError` subclasses on any network or protocol failure. Running a prompt goes through
`start()` -> `Execution.wait()`, which returns an outcome instead of raising.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from router.comfyui.errors import (
    ComfyUIConnectionError,
    ComfyUIError,
    ComfyUIHTTPError,
    ComfyUIProtocolError,
    ComfyUITimeoutError,
)
from router.comfyui.execution import DEFAULT_HISTORY_POLL_DELAYS_S, Execution, ProgressCallback
from router.comfyui.outcomes import ConnectionRefused, HttpError, ImageRef, Outcome, TimedOut
from router.comfyui.protocol import (
    HistoryEntry,
    QueueState,
    SystemStats,
    parse_history,
    parse_prompt_accepted,
    parse_prompt_rejection,
    parse_queue,
    parse_string_list,
    parse_system_stats,
    parse_upload,
)
from router.comfyui.socket_hub import Mailbox, SocketHub
from router.comfyui.ws import WsConnect, connect_websocket, ws_url

log = logging.getLogger(__name__)

_BODY_EXCERPT_CHARS = 500


# Kept-alive connections per backend. One client serves every thread of a router process (up to
# gunicorn's --threads jobs at once): with requests' default of 10, the load bench (500 jobs)
# logged ~150 "Connection pool is full, discarding connection" (each a new TCP connection next time);
# 64 still overflowed with 256 threads per process. Idle connections cost a socket each.
POOL_CONNECTIONS = 256


def _pooled_session() -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_CONNECTIONS)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class ComfyUIClient:
    """One ComfyUI backend at `base_url` (e.g. "http://127.0.0.1:8188").

    `client_id` identifies this client to ComfyUI: events of prompts submitted with it go to the
    WebSocket opened with it. `session` lets several clients share connection pools;
    `ws_connect` replaces the WebSocket transport (tests, proxies).
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        session: requests.Session | None = None,
        ws_connect: WsConnect = connect_websocket,
        history_poll_delays_s: Sequence[float] = DEFAULT_HISTORY_POLL_DELAYS_S,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.client_id = str(uuid.uuid4())
        self._session = session if session is not None else _pooled_session()
        self._owns_session = session is None
        self._history_poll_delays_s = tuple(history_poll_delays_s)
        # One socket for every prompt of this client (see socket_hub): events reach the socket of
        # the client_id a prompt was submitted with, so all are submitted with `client_id`.
        self._hub = SocketHub(ws_url(self.base_url, self.client_id), ws_connect, timeout_s)

    # --- plain calls ----------------------------------------------------------------------------

    def system_stats(self) -> SystemStats:
        return parse_system_stats(self._get_json("/system_stats"))

    def queue(self) -> QueueState:
        return parse_queue(self._get_json("/queue"))

    def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        """Every node class (or one: `{class: info}`, `{}` if unknown) with inputs and outputs."""
        path = "/object_info" if node_class is None else f"/object_info/{node_class}"
        body = self._get_json(path)
        if not isinstance(body, dict):
            raise ComfyUIProtocolError(
                f"{path} answered something that is not an object", url=self._url(path)
            )
        return body

    def models(self, folder: str | None = None) -> list[str]:
        """The model folders, or the files of one folder (e.g. "checkpoints")."""
        path = "/models" if folder is None else f"/models/{folder}"
        return parse_string_list(self._get_json(path), path)

    def history(self, prompt_id: str) -> HistoryEntry | None:
        """The finished prompt's record; None while it is queued or running, or when unknown."""
        return parse_history(prompt_id, self._get_json(f"/history/{prompt_id}"))

    def free(self, unload_models: bool = True, free_memory: bool = True) -> None:
        """Ask ComfyUI to unload models / free memory (applied after the current job)."""
        self._request("POST", "/free", json_body={"unload_models": unload_models, "free_memory": free_memory})

    def interrupt(self, prompt_id: str | None) -> None:
        """Interrupt `prompt_id` if it is the running prompt (a no-op otherwise).

        None interrupts whatever runs, including other clients' prompts: use it deliberately."""
        body: dict[str, str] = {} if prompt_id is None else {"prompt_id": prompt_id}
        self._request("POST", "/interrupt", json_body=body)

    def delete_from_queue(self, prompt_ids: Sequence[str]) -> None:
        """Remove pending prompts (running ones are not affected: interrupt them)."""
        self._request("POST", "/queue", json_body={"delete": list(prompt_ids)})

    def upload_image(self, data: bytes, filename: str, *, overwrite: bool = False) -> str:
        """Upload to ComfyUI's input folder; returns the name to put in LoadImage's `image` input.

        Without overwrite ComfyUI renames a clashing file ("x (1).png"): use the returned name."""
        files = {"image": (filename, data, "application/octet-stream")}
        form = {"type": "input", "overwrite": "true" if overwrite else "false"}
        response = self._request("POST", "/upload/image", files=files, data=form)
        return parse_upload(_json(response))

    def view(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        params = {"filename": filename, "subfolder": subfolder, "type": type}
        return self._request("GET", "/view", params=params).content

    def fetch_image(self, image: ImageRef) -> bytes:
        return self.view(image.filename, image.subfolder, image.type)

    # --- running a prompt -----------------------------------------------------------------------

    def start(
        self, graph: Mapping[str, Any], *, prompt_id: str | None = None, front: bool = False
    ) -> Execution:
        """Submit `graph` and return its Execution; never raises for network failures.

        The prompt's mailbox on the client's WebSocket is open BEFORE the POST so that no event
        of the prompt can be missed (a cached prompt finishes in about 1 ms). A failed submission
        gives an Execution whose `outcome` is already set (connection_refused, invalid, http_error).
        """
        pid = prompt_id or str(uuid.uuid4())
        try:
            mailbox = self._hub.subscribe(pid)
        except ComfyUIError as exc:
            return self._failed_execution(pid, self.client_id, self._connect_failure(pid, exc))
        submitted_at = time.monotonic()
        body: dict[str, Any] = {"prompt": dict(graph), "client_id": self.client_id, "prompt_id": pid}
        if front:
            body["front"] = True
        try:
            response = self._session.post(self._url("/prompt"), json=body, timeout=self.timeout_s)
        except requests.RequestException as exc:
            mailbox.close()
            return self._failed_execution(pid, self.client_id, self._request_failure(pid, "/prompt", exc))
        return self._execution_from_answer(pid, mailbox, submitted_at, response)

    def run(
        self,
        graph: Mapping[str, Any],
        *,
        timeout_s: float,
        on_progress: ProgressCallback | None = None,
        prompt_id: str | None = None,
        front: bool = False,
        cancel_on_timeout: bool = True,
    ) -> Outcome:
        """start() + wait() + close(); a timed-out prompt is cancelled unless told otherwise."""
        with self.start(graph, prompt_id=prompt_id, front=front) as execution:
            outcome = execution.wait(timeout_s=timeout_s, on_progress=on_progress)
            if isinstance(outcome, TimedOut) and cancel_on_timeout:
                try:
                    execution.cancel()
                except ComfyUIError as exc:
                    log.warning("cancel of timed-out %s failed: %s", execution.prompt_id, exc)
            return outcome

    def close(self) -> None:
        self._hub.close()
        if self._owns_session:
            self._session.close()

    # --- submission helpers ---------------------------------------------------------------------

    def _execution_from_answer(
        self, pid: str, mailbox: Mailbox, submitted_at: float, response: requests.Response
    ) -> Execution:
        failure: Outcome | None = None
        if response.status_code == 200:
            try:
                accepted = parse_prompt_accepted(_json(response))
            except ComfyUIProtocolError:
                failure = self._http_failure(pid, "/prompt", response)
            else:
                if accepted.prompt_id != pid:  # a ComfyUI that ignores the prompt_id it is given
                    self._hub.rename(mailbox, accepted.prompt_id)
                return Execution(
                    backend=self,
                    prompt_id=accepted.prompt_id,
                    client_id=self.client_id,
                    submitted_at=submitted_at,
                    channel=mailbox,
                    number=accepted.number,
                    node_errors=accepted.node_errors,
                    history_poll_delays_s=self._history_poll_delays_s,
                )
        elif response.status_code == 400:
            failure = parse_prompt_rejection(pid, _json_or_none(response))
        mailbox.close()
        return self._failed_execution(
            pid, self.client_id, failure or self._http_failure(pid, "/prompt", response)
        )

    def _failed_execution(self, pid: str, socket_id: str, outcome: Outcome) -> Execution:
        return Execution(
            backend=self,
            prompt_id=pid,
            client_id=socket_id,
            submitted_at=time.monotonic(),
            channel=None,
            outcome=outcome,
        )

    def _connect_failure(self, pid: str, exc: ComfyUIError) -> Outcome:
        url = exc.url or self.base_url
        if isinstance(exc, ComfyUIHTTPError):
            return HttpError(prompt_id=pid, url=url, status=exc.status, body_excerpt=exc.body_excerpt)
        if isinstance(exc, ComfyUITimeoutError):
            return HttpError(prompt_id=pid, url=url, status=None, body_excerpt=str(exc))
        return ConnectionRefused(prompt_id=pid, url=url, message=str(exc))

    def _request_failure(self, pid: str, path: str, exc: requests.RequestException) -> Outcome:
        url = self._url(path)
        if isinstance(exc, requests.ConnectionError):  # ConnectTimeout included: nothing reachable
            return ConnectionRefused(prompt_id=pid, url=url, message=str(exc))
        return HttpError(prompt_id=pid, url=url, status=None, body_excerpt=f"{type(exc).__name__}: {exc}")

    def _http_failure(self, pid: str, path: str, response: requests.Response) -> HttpError:
        return HttpError(
            prompt_id=pid,
            url=self._url(path),
            status=response.status_code,
            body_excerpt=response.text[:_BODY_EXCERPT_CHARS],
        )

    # --- HTTP helpers ---------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.base_url + path

    def _get_json(self, path: str) -> Any:
        return _json(self._request("GET", path))

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: object = None,
        files: Mapping[str, Any] | None = None,
        data: Mapping[str, str] | None = None,
    ) -> requests.Response:
        url = self._url(path)
        try:
            response = self._session.request(
                method, url, params=params, json=json_body, files=files, data=data, timeout=self.timeout_s
            )
        except requests.ConnectTimeout as exc:
            raise ComfyUIConnectionError(
                f"cannot connect to {url} within {self.timeout_s} s", url=url
            ) from exc
        except requests.Timeout as exc:
            raise ComfyUITimeoutError(
                f"{method} {url}: no answer within {self.timeout_s} s", url=url
            ) from exc
        except requests.ConnectionError as exc:
            raise ComfyUIConnectionError(f"cannot connect to {url}: {exc}", url=url) from exc
        except requests.RequestException as exc:
            raise ComfyUIError(f"{method} {url} failed: {exc}", url=url) from exc
        if response.status_code != 200:
            raise ComfyUIHTTPError(
                f"{method} {url} answered HTTP {response.status_code}",
                status=response.status_code,
                body_excerpt=response.text[:_BODY_EXCERPT_CHARS],
                url=url,
            )
        return response


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise ComfyUIProtocolError(
            f"{response.url} answered a body that is not JSON: {response.text[:200]!r}", url=response.url
        ) from exc


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
