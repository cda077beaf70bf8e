"""Run traced calls on NDIF, or in nnsight's local simulation of it.

A model loaded with ``load_model(name, remote=True)`` keeps no weights here: its config
and tokenizer are enough for the adapters and for prompt formatting, and every traced
call (:func:`workbench.sites.read_last_token`, :func:`workbench.sites.traced_generate`)
runs as an NDIF job. ``remote="local"`` loads the model here and runs each call through
nnsight's local simulation of the remote path: the trace is serialised exactly as for
NDIF, local modules are hidden as the server would hide them, then it runs. A passing
``remote="local"`` run is nnsight's test that a real remote run will work.

Configuration follows nnsight's own: the API key comes from ``NDIF_API_KEY`` or
``nnsight.CONFIG.set_default_api_key(...)`` and is never stored by the workbench; the
server from ``NDIF_HOST`` (default ``https://api.ndif.us``).

Jobs are submitted without blocking and polled, so that a failure or a timeout can name
its job id (:class:`RemoteJobError`).

Example:
    >>> check_remote("local")
    'local'
    >>> trace_options(type("M", (), {"remote": False})())
    {}
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any, Literal

from .errors import InvalidArgumentError, WorkbenchError

Remote = bool | Literal["local"]
REMOTE_CHOICES = (False, True, "local")

#: Seconds between two polls of a submitted job, and the longest wait for one job.
POLL_INTERVAL_S = 1.0
JOB_TIMEOUT_S = 1800.0


class RemoteError(WorkbenchError):
    """A remote run could not start: no API key, or the model is not hosted."""


class RemoteJobError(RemoteError):
    """A remote job failed on the server or timed out; ``job_id`` names it."""

    def __init__(self, message: str, job_id: str | None) -> None:
        super().__init__(message)
        self.job_id = job_id


def check_remote(remote: Any) -> Remote:
    """Return ``remote`` if it is ``False``, ``True`` or ``"local"``, else raise."""
    if remote is False or remote is True or remote == "local":
        return remote
    raise InvalidArgumentError(
        f"remote must be False (run here), True (run on NDIF) or 'local' (nnsight's local "
        f"simulation of NDIF), not {remote!r}")


def api_key() -> str | None:
    """The NDIF API key nnsight will send (``NDIF_API_KEY`` or nnsight's config)."""
    from nnsight import CONFIG

    return CONFIG.API.APIKEY or None


def check_ready(name: str) -> None:
    """Refuse to go on when no API key is set or NDIF does not host ``name`` now.

    Raises:
        RemoteError: with what to do about it.
    """
    from nnsight import CONFIG, ndif

    if not api_key():
        raise RemoteError(
            "no NDIF API key: set NDIF_API_KEY, or call "
            "nnsight.CONFIG.set_default_api_key('...') once (get a key at https://login.ndif.us)")
    status = ndif.status(raw=True)  # {} when the service cannot be reached
    if not isinstance(status, dict) or "deployments" not in status:
        raise RemoteError(
            f"cannot reach NDIF at {CONFIG.API.HOST}: check the network, NDIF_HOST, and "
            "https://discuss.ndif.us for outages")
    deployments = status["deployments"]
    running = sorted({str(entry.get("repo_id")) for entry in deployments.values()
                      if entry.get("application_state") == "RUNNING"})
    if name.lower() not in {repo.lower() for repo in running}:
        hosted = ", ".join(running) or "none"
        raise RemoteError(
            f"NDIF at {CONFIG.API.HOST} does not host {name!r} now (running: {hosted}); "
            "pick a running model, or see nnsight.status()")


def trace_options(model: Any) -> dict[str, Any]:
    """Keyword arguments that send an nnsight trace where ``model`` runs."""
    if model.remote == "local":
        return {"remote": "local"}
    if model.remote:
        return {"remote": True, "blocking": False}
    return {}


@contextlib.contextmanager
def reported(model: Any) -> Iterator[None]:
    """Turn nnsight's failure to submit a job into a :class:`RemoteJobError`."""
    if model.remote is not True:
        yield
        return
    from nnsight.intervention.backends.remote import RemoteError as NnsightRemoteError

    try:
        yield
    except NnsightRemoteError as exc:
        raise RemoteJobError(f"NDIF did not take the job: {exc}", None) from None


def result(model: Any, tracer: Any, name: str, local_value: Any,
           timeout_s: float | None = None) -> Any:
    """The value a trace saved under ``name``: waits for the job of a model on NDIF.

    In this process and in the local simulation, nnsight has already written the saved
    value into the caller's variable (``local_value``). A job on NDIF was submitted
    without blocking: poll it until it completes, fails or times out.

    Raises:
        RemoteJobError: the job failed on the server, or ran past ``timeout_s``
            (default :data:`JOB_TIMEOUT_S`); the message and ``job_id`` name the job.
    """
    if model.remote is not True:
        return local_value
    from nnsight.intervention.backends.remote import RemoteError as NnsightRemoteError

    backend = tracer.backend
    job_id = getattr(backend, "job_id", None)
    deadline = time.monotonic() + (JOB_TIMEOUT_S if timeout_s is None else timeout_s)
    while True:
        try:
            saves = backend()
        except NnsightRemoteError as exc:
            raise RemoteJobError(f"NDIF job {job_id} failed: {exc}", job_id) from None
        if saves is not None:
            if name not in saves:
                raise RemoteJobError(
                    f"NDIF job {job_id} completed without the value {name!r}", job_id)
            return saves[name]
        if time.monotonic() > deadline:
            raise RemoteJobError(
                f"NDIF job {job_id} did not finish within {timeout_s or JOB_TIMEOUT_S:.0f} s "
                f"(last status {getattr(backend, 'status', None)}); it may still be "
                "running on the server", job_id)
        time.sleep(POLL_INTERVAL_S)
