"""``remote=True`` against a fake NDIF: the HTTP service nnsight's remote backend talks to.

The fake answers nnsight's own endpoints on a loopback port: ``/status`` (which models
run), ``POST /request`` (a job is received and gets an id), ``GET /response/<id>`` (the
job's status: running, failed, or completed with a link to its result) and the result
download. Nothing in the workbench is patched; nnsight's config points at the fake
(``CONFIG.API.HOST``), and the one hub lookup nnsight makes to canonicalise a repo id is
answered from its own cache, as after a first online call.
"""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

import workbench
from tests.helpers import make_tiny_hf
from workbench import remote
from workbench.remote import RemoteError, RemoteJobError

REPO = "example-org/tiny-llama"


class FakeNdif:
    """A loopback NDIF: ``status`` lists running repos; ``job`` says how jobs end."""

    def __init__(self) -> None:
        self.running = [REPO]
        self.job = "completed"  # or "error", "running", "refused"
        self.result: dict = {}
        self.requests = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args) -> None:
                pass

            def reply(self, code: int, body: bytes, kind: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - the http.server name
                if self.path == "/status":
                    deployments = {f"key-{i}": {"repo_id": repo, "application_state": "RUNNING"}
                                   for i, repo in enumerate(fake.running)}
                    self.reply(200, json.dumps({"deployments": deployments}).encode())
                elif self.path == "/response/job-42":
                    self.reply(200, json.dumps(fake.response()).encode())
                elif self.path == "/result/job-42":
                    buffer = io.BytesIO()
                    torch.save(fake.result, buffer)
                    self.reply(200, buffer.getvalue(), "application/octet-stream")
                else:
                    self.reply(404, b"{}")

            def do_POST(self) -> None:  # noqa: N802 - the http.server name
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.requests += 1
                if fake.job == "refused":
                    self.reply(401, json.dumps({"detail": "invalid API key"}).encode())
                    return
                self.reply(200, json.dumps({"id": "job-42", "status": "RECEIVED"}).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def response(self) -> dict:
        if self.job == "error":
            return {"id": "job-42", "status": "ERROR",
                    "description": "CUDA out of memory on the server"}
        if self.job == "running":
            return {"id": "job-42", "status": "RUNNING"}
        return {"id": "job-42", "status": "COMPLETED", "data": f"{self.host}/result/job-42"}


@pytest.fixture
def ndif(monkeypatch, tmp_path, tiny_tokenizer):
    """A fake NDIF hosting a tiny model whose config and tokenizer are in a local folder."""
    from nnsight import CONFIG
    from nnsight.modeling import huggingface

    fake = FakeNdif()
    monkeypatch.setattr(CONFIG.API, "HOST", fake.host)
    monkeypatch.setattr(CONFIG.API, "APIKEY", "test-key")
    monkeypatch.setattr(CONFIG.API, "COMPRESS", False)
    monkeypatch.setattr(remote, "POLL_INTERVAL_S", 0.01)
    folder = tmp_path / "tiny-llama"
    hf = make_tiny_hf("llama")
    hf.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    fake.running = [str(folder)]
    monkeypatch.setitem(huggingface._ID_CACHE, str(folder), REPO)
    fake.folder, fake.hf = str(folder), hf
    yield fake
    fake.server.shutdown()


def test_a_hosted_model_loads_without_weights(ndif):
    model = workbench.load_model(ndif.folder, remote=True)
    assert model.remote is True and model.source == "ndif"
    assert next(model.hf_model.parameters()).device.type == "meta"
    assert (model.n_layers, model.d_mlp) == (2, 96)
    assert model.device.type == "cpu"  # inputs are prepared here


def test_a_completed_job_returns_its_saved_value(ndif, tiny_tokenizer):
    model = workbench.load_model(ndif.folder, remote=True)
    here = workbench.from_hf(ndif.hf, tiny_tokenizer)
    inputs = here.encode(["Hi", "How do I bake a cake?"], here.prompting())
    from workbench.sites import read_last_token

    expected = read_last_token(here, inputs, "input")  # [batch, layers, d_mlp]
    ndif.result = {"saved": list(expected.unbind(dim=1))}  # what the server's run saved
    assert torch.equal(read_last_token(model, inputs, "input"), expected)
    assert ndif.requests == 1


def test_no_api_key_is_a_clear_error(ndif, monkeypatch):
    from nnsight import CONFIG

    monkeypatch.setattr(CONFIG.API, "APIKEY", None)
    with pytest.raises(RemoteError, match="NDIF_API_KEY"):
        workbench.load_model(ndif.folder, remote=True)


def test_a_model_that_is_not_hosted_is_a_clear_error(ndif):
    ndif.running = ["meta-llama/Llama-3.1-70B-Instruct"]
    with pytest.raises(RemoteError, match="does not host .*Llama-3.1-70B-Instruct"):
        workbench.load_model(ndif.folder, remote=True)


def test_an_unreachable_service_is_a_clear_error(ndif, monkeypatch):
    from nnsight import CONFIG

    monkeypatch.setattr(CONFIG.API, "HOST", "http://127.0.0.1:9")
    with pytest.raises(RemoteError, match="cannot reach NDIF"):
        workbench.load_model(ndif.folder, remote=True)


@pytest.mark.parametrize("job, message", [
    ("error", "job-42 failed: CUDA out of memory on the server"),
    ("refused", "did not take the job: .*invalid API key"),
])
def test_a_failed_job_names_its_id_and_cause(ndif, job, message):
    model = workbench.load_model(ndif.folder, remote=True)
    ndif.job = job
    with pytest.raises(RemoteJobError, match=message) as caught:
        workbench.generate(model, ["Hi"], max_new_tokens=2)
    assert caught.value.job_id == ("job-42" if job == "error" else None)
    assert model.edits == []


def test_a_job_that_runs_too_long_times_out_with_its_id(ndif, monkeypatch):
    model = workbench.load_model(ndif.folder, remote=True)
    ndif.job = "running"
    monkeypatch.setattr(remote, "JOB_TIMEOUT_S", 0.2)
    with pytest.raises(RemoteJobError, match="job-42 did not finish within") as caught:
        workbench.discover(model, ["Hi"], ["Go"], universal=None, top_k=2, progress=False)
    assert caught.value.job_id == "job-42"


def test_work_that_needs_the_weights_here_is_refused(ndif, tiny_llama):
    from workbench.bake import bake
    from workbench.evaluation.mmlu import mmlu
    from workbench.streaming import stream_generate

    model = workbench.load_model(ndif.folder, remote=True)
    circuit = workbench.Circuit.from_neurons([(0, 1, 1.0)], model=model)
    with pytest.raises(workbench.errors.InvalidArgumentError, match="bake needs the weights"):
        bake(model, circuit, 0.0)
    simulated = workbench.from_hf(tiny_llama.hf_model, tiny_llama.tokenizer, remote="local")
    for remote_model in (model, simulated):
        with pytest.raises(workbench.errors.InvalidArgumentError, match="calls the model"):
            mmlu(remote_model, n=2)
        with pytest.raises(workbench.errors.InvalidArgumentError, match="calls the model"):
            stream_generate(remote_model, "Hi")


def test_bad_remote_values_are_refused(tiny_llama):
    with pytest.raises(workbench.errors.InvalidArgumentError, match="remote must be"):
        workbench.load_model("anything", remote="yes")
    with pytest.raises(workbench.errors.InvalidArgumentError, match="cannot run on NDIF"):
        workbench.from_hf(tiny_llama.hf_model, tiny_llama.tokenizer, remote=True)
