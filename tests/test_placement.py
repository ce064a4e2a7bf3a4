"""The service's replica plan for CPU and GPU clusters (no Ray: the sizes only)."""

from __future__ import annotations

import pytest

from face3d_live.errors import ConfigError
from face3d_live.scale.config import ServeConfig
from face3d_live.scale.placement import local_gpu_memory_gib, plan_replicas


def test_cpu_machine_autoscales_http_replicas_that_hold_their_model() -> None:
    plan = plan_replicas(ServeConfig(), cpus=2, gpus=0)
    assert plan.embedded and plan.model_replicas == 0
    assert (plan.min_http, plan.max_http) == (1, 2)
    assert plan.gpus_per_http == 0 and plan.gpus_per_model == 0


def test_gpu_machine_gets_a_fixed_set_of_model_holding_replicas_sharing_the_gpu() -> None:
    plan = plan_replicas(ServeConfig(), cpus=16, gpus=1, gpu_memory_gib=139.8)
    assert plan.embedded
    assert (plan.min_http, plan.max_http) == (10, 10)  # 5 per 8 CPUs (the H200 measurements)
    assert plan.gpus_per_http == pytest.approx(0.1)
    # a small consumer GPU: as many as fit at ~1.25 GiB each
    small = plan_replicas(ServeConfig(), cpus=16, gpus=1, gpu_memory_gib=8.0)
    assert (small.min_http, small.max_http) == (6, 6)
    # two GPUs: memory for twice as many, the CPUs still bound them
    assert plan_replicas(ServeConfig(), cpus=32, gpus=2, gpu_memory_gib=8.0).max_http == 12
    # under MPS with GPU decoding the replicas share one context: one per CPU (H200: 16 served 1.5x 10's)
    shared = plan_replicas(ServeConfig(), cpus=16, gpus=1, gpu_memory_gib=139.8, shared_gpu_context=True)
    assert (shared.min_http, shared.max_http) == (16, 16)
    assert (
        plan_replicas(ServeConfig(), 16, 1, 8.0, shared_gpu_context=True).max_http == 6
    )  # memory still caps


def test_a_model_host_per_gpu_takes_a_cpu_and_a_gpu_share_beside_the_replicas() -> None:
    one = ServeConfig(model_host="model", hosts_per_gpu=1)
    plan = plan_replicas(one, 16, 1, 139.8, shared_gpu_context=True, model_host=True)
    assert plan.model_hosts == 1 and (plan.min_http, plan.max_http) == (15, 15)
    assert plan.gpus_per_http == plan.gpus_per_model == pytest.approx(1 / 16)  # 15 replicas + 1 host
    assert "1 model host(s), 1 per GPU" in plan.describe() and plan.model_host == "model"
    two = plan_replicas(one, 32, 2, 139.8, shared_gpu_context=True, model_host=True)
    assert two.model_hosts == 2 and two.max_http == 30
    # several hosts per GPU, each with a CPU and a GPU share
    config = ServeConfig(model_host="all", hosts_per_gpu=2)
    pair = plan_replicas(config, 16, 1, 139.8, shared_gpu_context=True, model_host=True)
    assert pair.model_hosts == 2 and pair.max_http == 14 and pair.gpus_per_model == pytest.approx(1 / 16)
    assert "2 model host(s), 2 per GPU" in pair.describe()
    assert plan_replicas(config, 32, 2, 139.8, shared_gpu_context=True, model_host=True).model_hosts == 4
    assert plan_replicas(config, 4, 0, model_host=True).model_hosts == 1  # a CPU machine keeps one
    # on GPUs only beside replicas that share a context (MPS) or hold none
    assert plan_replicas(ServeConfig(), 16, 1, 139.8, model_host=True).model_hosts == 0
    # without GPUs: one host shares the model, the replicas get the CPUs left
    cpu = plan_replicas(ServeConfig(), 4, 0, model_host=True)
    assert cpu.model_hosts == 1 and cpu.max_http == 3 and cpu.gpus_per_model == 0
    assert "1 model host (on the CPU)" in cpu.describe()
    with pytest.raises(ConfigError, match="--model-host must be auto, off, model or all"):
        ServeConfig(model_host="yes")
    with pytest.raises(ConfigError, match="--hosts-per-gpu needs a model host"):
        ServeConfig(model_host="off", hosts_per_gpu=2)
    with pytest.raises(ConfigError, match="--hosts-per-gpu must be ≥ 1"):
        ServeConfig(model_host="model", hosts_per_gpu=0)


def test_model_host_auto_is_three_hosts_a_gpu_where_the_replicas_share_its_context() -> None:
    from face3d_live.scale.config import ModelOptions
    from face3d_live.scale.placement import AUTO_HOSTS_PER_GPU, resolve_model_host

    auto = ServeConfig()
    assert (auto.model_host, auto.hosts_per_gpu) == ("auto", None)
    assert (
        resolve_model_host(auto, 1, shared_gpu_context=True) == ("model", AUTO_HOSTS_PER_GPU) == ("model", 3)
    )
    assert resolve_model_host(auto, 0, shared_gpu_context=False) == ("off", 1)  # a CPU machine: own models
    assert resolve_model_host(auto, 1, shared_gpu_context=False) == (
        "off",
        1,
    )  # no MPS: time-slicing contexts
    assert resolve_model_host(auto, 1, True, unavailable="not on this platform") == ("off", 1)
    assert resolve_model_host(ServeConfig(model_replicas=1), 1, True) == ("off", 1)
    lighter = ServeConfig(model=ModelOptions(first_pass="r50-lite"))  # the replicas hold both models
    assert resolve_model_host(lighter, 1, True) == ("off", 1)
    assert resolve_model_host(ServeConfig(hosts_per_gpu=2), 1, True) == ("model", 2)  # the count as given
    assert resolve_model_host(ServeConfig(hosts_per_gpu=2), 0, False) == ("off", 1)  # no host here to count
    assert resolve_model_host(ServeConfig(model_host="all"), 2, True) == ("all", 3)
    assert resolve_model_host(ServeConfig(model_host="model"), 0, False) == ("model", 1)  # CPU: one host
    # the H200's plan by default: 3 hosts and 13 replicas on 16 CPUs, each a sixteenth of the GPU
    mode, hosts = resolve_model_host(auto, 1, True)
    from dataclasses import replace

    plan = plan_replicas(
        replace(auto, model_host=mode, hosts_per_gpu=hosts),
        16,
        1,
        139.8,
        shared_gpu_context=True,
        model_host=True,
    )
    assert (plan.model_hosts, plan.max_http, plan.model_host) == (3, 13, "model")
    assert plan.gpus_per_model == pytest.approx(1 / 16)


def test_explicit_sizes_and_the_model_deployment_win() -> None:
    plan = plan_replicas(
        ServeConfig(ingress_min_replicas=3, ingress_max_replicas=4), cpus=16, gpus=1, gpu_memory_gib=80
    )
    assert (plan.min_http, plan.max_http) == (3, 4)
    dep = plan_replicas(ServeConfig(model_replicas=2), cpus=16, gpus=2)
    assert not dep.embedded and dep.model_replicas == 2
    assert dep.gpus_per_model == 1.0 and dep.gpus_per_http == 0
    assert (dep.min_http, dep.max_http) == (1, 14)  # the CPUs the model replicas leave, autoscaled from one
    # a minimum above the maximum is clamped, never an impossible deployment
    assert plan_replicas(ServeConfig(ingress_min_replicas=8), cpus=2, gpus=0).min_http == 2


def test_zero_replicas_is_refused() -> None:
    with pytest.raises(ConfigError, match="ingress_min_replicas"):
        ServeConfig(ingress_min_replicas=0)
    with pytest.raises(ConfigError, match="gpu_batch_threads must be"):
        ServeConfig(gpu_batch_threads=0)


def test_gpu_memory_is_read_where_nvml_answers() -> None:
    mem = local_gpu_memory_gib()
    assert mem is None or mem > 1.0


def test_the_plan_reads_as_one_line() -> None:
    cpu = plan_replicas(ServeConfig(), cpus=2, gpus=0).describe()
    assert cpu == "1-2 HTTP replica(s), each with its own model (on the CPU)"
    gpu = plan_replicas(ServeConfig(), cpus=16, gpus=1, gpu_memory_gib=139.8).describe()
    assert gpu == "10 HTTP replica(s), each with its own model (0.1 GPU each)"
    dep = plan_replicas(ServeConfig(model_replicas=1), cpus=16, gpus=1).describe()
    assert dep == "1-15 HTTP replica(s) and up to 1 model replica(s), 1 GPU each"


def test_gpu_replicas_are_sized_by_the_nodes_that_have_gpus() -> None:
    # a cluster: 48 CPUs on GPU-less nodes, one 16-core node with a GPU: the replicas that hold a model
    # can only go to the GPU node, so 10, not 5/8 of 64
    plan = plan_replicas(ServeConfig(), cpus=64, gpus=1, gpu_memory_gib=80, gpu_node_cpus=16)
    assert (plan.min_http, plan.max_http) == (10, 10)
    # the model deployment puts the HTTP replicas on every node
    dep = plan_replicas(ServeConfig(model_replicas=1), cpus=64, gpus=1, gpu_node_cpus=16)
    assert dep.max_http == 63


def test_the_service_options_reach_its_config() -> None:
    import argparse

    from face3d_live.cli.serve import add_service_options

    p = argparse.ArgumentParser()
    add_service_options(p)
    args = p.parse_args(["--streams", "3", "--model-host", "all", "--hosts-per-gpu", "2"])
    config = ServeConfig.from_args(args)
    assert (config.streams, config.model_host, config.hosts_per_gpu) == (3, "all", 2)
    assert ServeConfig.from_args(p.parse_args([])) == ServeConfig()  # the flags' defaults are the config's
    # photos: one pass unless told (two with a first-pass model, which places the second pass's crop)
    assert ServeConfig().model.passes == 1
    assert ServeConfig.from_args(p.parse_args(["--passes", "2"])).model.passes == 2
    assert ServeConfig.from_args(p.parse_args(["--first-pass", "r50-lite"])).model.passes == 2
    with pytest.raises(ConfigError, match="needs --passes 2"):
        ServeConfig.from_args(p.parse_args(["--first-pass", "r50-lite", "--passes", "1"]))
    from face3d_live.cli.options import add_photo_options

    process = argparse.ArgumentParser()
    add_photo_options(process)
    assert process.parse_args([]).passes == 2  # `process` keeps two
    with pytest.raises(ConfigError, match="streams must be ≥ 1"):
        ServeConfig.from_args(p.parse_args(["--streams", "0"]))
