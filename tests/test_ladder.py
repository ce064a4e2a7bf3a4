"""Lightweighting ladder: structured pruning, slim save/load/ONNX, INT8 QAT Q/DQ export (onnxruntime +
TensorRT-RTX), rung models through the Reconstructor, distillation steps, the ladder bench.

Small FaceR50s (width 16) with random weights and BatchNorm statistics keep this fast on 2 cores; the
code paths are the ones the real 26M-parameter model takes.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from face3d_live.models.layout import NUM_LM68, NUM_POINTS, OUTPUT_DIM
from face3d_live.models.r50 import FaceR50
from face3d_live.training.prune import PruneConfig, macs, prune_in_place, prune_r50
from face3d_live.training.slim import count_params, load_slim, save_slim, widths_of

pytest.importorskip("torch_pruning")
HAS_TRT = importlib.util.find_spec("tensorrt_rtx") is not None


def _random_r50(width: int = 16, seed: int = 0) -> FaceR50:
    torch.manual_seed(seed)
    m = FaceR50(width=width).eval()
    with torch.no_grad():
        for bn in (x for x in m.modules() if isinstance(x, nn.BatchNorm2d)):
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0, 0.1)
    return m


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Original, pruned slim, and the rung files (r50, r50-lite, r50-int8) of a small random model."""
    from face3d_live.models.r50_face import calibration_crops, save_r50
    from face3d_live.training.qat import QuantFaceR50, save_int8

    d = tmp_path_factory.mktemp("ladder")
    r50 = _random_r50()
    slim, report = prune_r50(r50, PruneConfig(ratio=0.5, round_to=8))
    q = QuantFaceR50(slim)
    crops = torch.from_numpy(calibration_crops(8))
    q.calibrate([crops])
    q.freeze()
    save_r50(r50, d / "r50.safetensors")
    save_slim(slim, d / "lite.safetensors")
    save_int8(q, d / "int8.safetensors")
    return {"dir": d, "r50": r50, "slim": slim, "report": report, "q": q, "crops": crops}


@pytest.fixture
def rung_env(models, monkeypatch, tmp_path):
    d = models["dir"]
    monkeypatch.setenv("FACE3D_R50_WEIGHTS", str(d / "r50.safetensors"))
    monkeypatch.setenv("FACE3D_R50_LITE_WEIGHTS", str(d / "lite.safetensors"))
    monkeypatch.setenv("FACE3D_R50_INT8_WEIGHTS", str(d / "int8.safetensors"))
    monkeypatch.setenv("FACE3D_ENGINES", str(tmp_path / "engines"))
    return d


# ---- pruning ------------------------------------------------------------------------------------------
def test_pruning_removes_whole_channels(models):
    r50, slim, report = models["r50"], models["slim"], models["report"]
    assert count_params(slim) < 0.45 * count_params(r50)  # 50 % of channels ≈ 25-30 % of weights
    assert macs(slim) < 0.45 * macs(r50)
    assert report.params_after == count_params(slim) and report.macs_after == macs(slim)
    orig_convs = [m for m in r50.modules() if isinstance(m, nn.Conv2d)]
    slim_convs = [m for m in slim.modules() if isinstance(m, nn.Conv2d)]
    assert len(orig_convs) == len(slim_convs)  # same graph, thinner layers
    narrower = sum(s.out_channels < o.out_channels for o, s in zip(orig_convs, slim_convs))
    assert narrower >= len(orig_convs) - 1  # every conv but (maybe) the stem, kept at min_stem
    assert all(s.out_channels % 8 == 0 for s in slim_convs)
    # residual adds: every block of a stage (and its downsample) keeps one output width
    w = widths_of(slim)
    for stage_cfg, stage in zip(w["stages"], slim.layers):
        assert (
            {b.conv3.out_channels for b in stage}
            == {stage_cfg["out"]}
            == {stage[0].downsample[0].out_channels}
        )
    assert slim.head.in_features == w["stages"][-1]["out"] and slim.head.out_features == r50.head.out_features
    # whole filters removed, not zeroed: every kept stem filter is one of the original filters, unchanged
    orig = r50.stem[0].weight.detach().flatten(1)
    kept = slim.stem[0].weight.detach().flatten(1)
    assert torch.cdist(kept, orig).min(1).values.max() == 0
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        out = slim(x)
        in_place = prune_in_place(copy.deepcopy(r50), PruneConfig(ratio=0.5, round_to=8))(x)
    assert out.shape == (2, OUTPUT_DIM) == (2, 1639)  # v2 layout: 478 + 68 points and presence
    torch.testing.assert_close(out, in_place, rtol=0, atol=1e-6)  # the slim class runs the pruned graph


def test_prune_config_is_checked():
    from face3d_live.errors import ConfigError

    with pytest.raises(ConfigError):
        PruneConfig(ratio=1.0)


def test_slim_save_load_onnx_round_trip(models, tmp_path):
    import onnxruntime as ort

    from face3d_live.models.export import export_onnx

    slim = models["slim"]
    path = tmp_path / "lite.safetensors"
    save_slim(slim, path, note="test")
    loaded = load_slim(path)
    assert widths_of(loaded) == widths_of(slim)
    half = copy.deepcopy(slim)
    with torch.no_grad():
        for p in list(half.parameters()) + [b for b in half.buffers() if b.is_floating_point()]:
            p.copy_(p.half().float())  # the file stores FP16
    x = torch.rand(3, 3, 224, 224)
    with torch.no_grad():
        ref = loaded(x).numpy()
        torch.testing.assert_close(loaded(x), half(x), rtol=0, atol=1e-5)
    onnx_path = export_onnx(loaded, tmp_path / "lite.onnx")
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"input": x.numpy()})
    assert np.abs(got - ref).max() < 1e-4


def test_slim_file_checks(models, tmp_path):
    from face3d_live.errors import ModelError
    from face3d_live.models.r50_face import save_r50

    save_r50(models["r50"], tmp_path / "r50.safetensors")
    with pytest.raises(ModelError, match="FaceR50Slim"):
        load_slim(tmp_path / "r50.safetensors")  # an unpruned r50 file is not a slim file


# ---- INT8 -----------------------------------------------------------------------------------------------
def test_int8_qdq_runs_in_onnxruntime_with_int8_kernels(models, tmp_path):
    import onnx
    import onnxruntime as ort

    from face3d_live.inference.ort_backend import session_options
    from face3d_live.models.export import export_onnx
    from face3d_live.training.qat import export_qdq, load_int8, ort_flavour, save_int8

    q = models["q"]
    x = models["crops"][:4]
    with torch.no_grad():
        ref = q(x).numpy()
        fp = models["slim"](x).numpy()
    trt_path = export_qdq(q, tmp_path / "q.onnx")
    ort_path = ort_flavour(trt_path, tmp_path / "q_ort.onnx")
    fp32_path = export_onnx(models["slim"], tmp_path / "fp32.onnx")
    assert trt_path.stat().st_size < 0.35 * fp32_path.stat().st_size  # INT8 weight initializers
    g = onnx.load(str(trt_path)).graph
    int8_bytes = sum(len(i.raw_data) for i in g.initializer if i.data_type == onnx.TensorProto.INT8)
    assert int8_bytes > 0.8 * sum(len(i.raw_data) for i in g.initializer)
    scale = np.abs(fp).max()
    for path in (trt_path, ort_path):
        sess = ort.InferenceSession(str(path), session_options(2), providers=["CPUExecutionProvider"])
        (got,) = sess.run(None, {"input": x.numpy()})
        assert np.abs(got - ref).max() < 0.05 * scale  # same INT8 arithmetic, rounding details aside
    # onnxruntime really runs INT8 kernels on the ort flavour: fused QLinearConv, no float Conv left
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(ort_path), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node]
    assert ops.count("QLinearConv") == sum(isinstance(m, nn.Conv2d) for m in models["slim"].modules())
    assert "Conv" not in ops and "FusedConv" not in ops
    # the rung file rebuilds the same network exactly
    save_int8(q, tmp_path / "int8.safetensors")
    with torch.no_grad():
        assert torch.equal(load_int8(tmp_path / "int8.safetensors")(x), q(x))


@pytest.mark.skipif(not HAS_TRT, reason="tensorrt_rtx not installed")
def test_int8_qdq_builds_with_tensorrt_rtx(models, tmp_path):
    from face3d_live.inference.trt_build import build_engine, import_trt
    from face3d_live.training.qat import export_qdq

    path = export_qdq(models["q"], tmp_path / "q.onnx")
    engine = build_engine(path, cc="86", trt=import_trt())
    assert len(engine) > 100_000


def test_qat_step_trains_through_fake_quant(models):
    from face3d_live.training.qat import QuantFaceR50

    q = QuantFaceR50(models["slim"])
    q.calibrate([models["crops"]])
    w0 = q.layers[0][0].conv1.weight.detach().clone()
    opt = torch.optim.SGD(q.parameters(), lr=0.1)
    loss = q(models["crops"][:2]).square().mean()
    loss.backward()
    assert q.layers[0][0].conv1.weight.grad.abs().sum() > 0  # straight-through gradients
    opt.step()
    assert not torch.equal(q.layers[0][0].conv1.weight, w0)
    q.freeze()
    conv = q.layers[0][0].conv1
    steps = conv.weight / conv.w_scale.view(-1, 1, 1, 1)
    assert torch.allclose(steps, steps.round(), atol=1e-3) and steps.abs().max() <= 127


# ---- rung models -------------------------------------------------------------------------------------
def test_rungs_reconstruct_through_the_public_api(rung_env):
    from skimage.data import astronaut

    from face3d_live import Reconstructor
    from face3d_live.errors import ConfigError
    from face3d_live.models.registry import create_model

    img = astronaut()
    for name in ("r50-lite", "r50-int8"):
        with Reconstructor(name, backend="onnxruntime", smoothing=None) as rec:
            faces = rec.reconstruct(img, boxes=[(150, 40, 280, 200)])
            assert rec.model.name == name
        assert len(faces) == 1 and faces[0].vertices.shape == (468, 3)
        assert np.isfinite(faces[0].vertices).all()
    with pytest.raises(ConfigError):
        create_model("r50-int8", "torch")
    with pytest.raises(ConfigError):
        create_model("r50-lite-fp16", "onnxruntime")


def test_missing_rung_file_is_a_clear_error(monkeypatch, tmp_path):
    from face3d_live.errors import ModelError
    from face3d_live.models.registry import create_model

    monkeypatch.setenv("FACE3D_R50_INT8_WEIGHTS", str(tmp_path / "none.safetensors"))
    with pytest.raises(ModelError, match="optimize"):
        create_model("r50-int8", "onnxruntime")


# ---- distillation ---------------------------------------------------------------------------------------
def _noise_data(held_out: np.ndarray, teacher_ok: bool, seed: int):
    """A tiny TrainData of noise images (128² canvas, fixed crops, no manual points)."""
    from face3d_live.training.dataset import TrainData

    n = len(held_out)
    rng = np.random.default_rng(seed)
    return TrainData(
        images=rng.integers(0, 255, (n, 128, 128, 3), dtype=np.uint8),
        verts=np.zeros((n, NUM_POINTS, 3), np.float32),
        lm68=np.full((n, NUM_LM68, 3), np.nan, np.float32),
        points=np.full((n, 21, 2), np.nan, np.float32),
        yaw=np.zeros(n, np.float32),
        teacher_ok=np.full(n, teacher_ok),
        mesh_crop=np.tile(np.float32([64, 64, 120, 0]), (n, 1)),
        box_crop=np.tile(np.float32([64, 64, 160, 0]), (n, 1)),
        held_out=held_out,
        shape=np.full((n, 2), 128, np.float32),
        names=np.array([f"x{i}" for i in range(n)]),
    )


def test_distiller_steps_move_the_student_only(models, tmp_path):
    from face3d_live.training.distill import DistillConfig, Distiller

    data = _noise_data(np.array([False] * 5 + [True]), teacher_ok=False, seed=0)
    student = copy.deepcopy(models["slim"])
    teacher = models["r50"]
    t0 = [p.detach().clone() for p in teacher.parameters()]
    s0 = student.head.weight.detach().clone()
    d = Distiller(
        DistillConfig(batch=2, steps=2),
        data,
        np.eye(21, 468, dtype=np.float32),
        tmp_path,
        student,
        teacher,
        "cpu",
    )
    d.run(resume=False)
    assert d.step == 2 and d.history and np.isfinite(d.history[-1]["kd"])
    assert not torch.equal(d.model.head.weight, s0)
    assert all(torch.equal(a, b) for a, b in zip(t0, teacher.parameters()))


def test_data_pack_round_trip(tmp_path):
    from face3d_live.training.dataset import TrainData
    from face3d_live.training.distill import load_packed, pack_data

    n = 4
    rng = np.random.default_rng(1)
    img = np.zeros((n, 128, 128, 3), np.uint8)
    img[:, 32:96, 32:96] = rng.integers(0, 255, (n, 1, 1, 3), dtype=np.uint8)
    data = TrainData(
        images=img,
        verts=np.zeros((n, NUM_POINTS, 3), np.float32),
        lm68=np.full((n, NUM_LM68, 3), np.nan, np.float32),
        points=rng.random((n, 21, 2)).astype(np.float32),
        yaw=np.float32([0, 10, 20, 30]),
        teacher_ok=np.ones(n, bool),
        mesh_crop=rng.random((n, 4)).astype(np.float32),
        box_crop=rng.random((n, 4)).astype(np.float32),
        held_out=np.array([True, False, False, False]),
        shape=np.full((n, 2), 120, np.float32),
        names=np.array(["a", "b", "c", "d"]),
    )
    info = pack_data(data, tmp_path / "p.npz", budget_mb=1.0, held_out=1, quality=95)
    back = load_packed(tmp_path / "p.npz")
    assert info["images"] == n and len(back) == n and back.held_out.sum() == 1
    assert back.verts.shape == (n, NUM_POINTS, 3) and back.lm68.shape == (n, NUM_LM68, 3)  # no labels packed
    assert np.isnan(back.lm68).all()
    order = np.argsort(back.yaw)  # held-out first, then shuffled training crops
    assert np.abs(back.images[order].astype(int) - img.astype(int)).mean() < 3
    np.testing.assert_allclose(back.mesh_crop[order], data.mesh_crop)


# ---- the ladder bench --------------------------------------------------------------------------------------
def test_ladder_bench_produces_rows(rung_env, tmp_path):
    from face3d_live.bench import ladder
    from face3d_live.training.data import aflw_shards, default_data_dir

    has_data = bool(aflw_shards(default_data_dir()))
    args = argparse.Namespace(
        rungs=",".join(ladder.RUNGS),
        batches="1,2",
        seconds=0.05,
        images=3,
        cc="86" if HAS_TRT else "",
        gpu_json=tmp_path / "none.json",
        out_dir=tmp_path / "out",
        no_quality=not has_data,
        interleaved_rounds=1,
        extra=[f"small lite={rung_env / 'lite.safetensors'}"],
        no_references=False,
    )
    result = ladder.run(args)
    rows = result["rungs"]
    assert list(rows) == list(ladder.RUNGS)
    for row in rows.values():
        assert row["file_mb"] > 0 and row["cpu"]
        for r in row["cpu"].values():
            assert r["b1_ms"] > 0 and r["b2_ms"] > 0 and r["peak_rss_mb"] > 0
        assert row["speedup_b1"]
        if HAS_TRT:
            assert "mb" in row["tensorrt_rtx"]["sm86"], row["tensorrt_rtx"]
    assert "onnxruntime" in rows["pruned-int8"]["cpu"] and "torch" in rows["pruned-fp16"]["cpu"]
    assert rows["pruned-int8"]["file_mb"] < rows["pruned-fp32"]["file_mb"] < rows["original-fp32"]["file_mb"]
    if has_data:
        q = result["quality"]
        assert q["images"] == 3 and q["original-fp32"]["nme_change"] == 0
        assert q["original-fp32"]["vertex_dist_px"] == 0
        refs = q["references"]  # the original on perturbed inputs, and the --extra rung file
        assert set(refs) == {*ladder.REFERENCES, "small lite"}
        for row in refs.values():  # random weights: the meshes may fall outside the render (SSIM None)
            assert row["vertex_dist_px"] > 0
            assert row["ssim_view"] is None or 0 < row["ssim_view"] <= 1
        assert refs["small lite"]["vertex_dist_px"] == q["pruned-fp32"]["vertex_dist_px"]  # the same file
    il = result["interleaved"]  # every onnxruntime rung timed in the same round-robin blocks
    assert set(il["speedup"]) == {"pruned-fp32", "pruned-int8"} and il["pruned-int8"]["b1_ms"] > 0
    md = (tmp_path / "out" / "ladder.md").read_text()
    assert (
        "pruned INT8 (QAT)" in md
        and "Interleaved onnxruntime" in md
        and (tmp_path / "out" / "ladder.json").is_file()
    )


def test_ladder_extra_must_name_a_rung_file(models, tmp_path):
    from face3d_live.bench import ladder
    from face3d_live.errors import ConfigError, ModelError

    with pytest.raises(ConfigError, match="LABEL=FILE"):
        ladder._parse_extra([str(tmp_path / "missing.safetensors")])
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"not a rung")
    extra = ladder._parse_extra([f"bogus={bogus}"])
    with pytest.raises(ModelError, match="not a rung file"), ladder._rung_file(extra["bogus"]):
        pass
    original = models["dir"] / "r50.safetensors"
    with pytest.raises(ModelError, match="not an r50-lite or r50-int8"), ladder._rung_file(original):
        pass


def test_qat_of_the_unpruned_original_keeps_its_widths(models, tmp_path):
    """`lightweight --qat-original`: the INT8-only reference point (no pruning, no distillation)."""
    from face3d_live.training import lightweight
    from face3d_live.training.distill import pack_data
    from face3d_live.training.qat import load_int8

    data = _noise_data(np.array([True] + [False] * 5), teacher_ok=True, seed=2)
    pack_data(data, tmp_path / "p.npz", budget_mb=1.0, held_out=1, quality=90)
    out = tmp_path / "out"
    args = ["--data", str(tmp_path / "p.npz"), "--teacher", str(models["dir"] / "r50.safetensors")]
    assert (
        lightweight.main([*args, "--out", str(out), "--qat-original", "--qat-steps", "1", "--batch", "2"])
        == 0
    )
    q = load_int8(out / "face3d-r50-int8.safetensors")
    assert q.config == widths_of(models["r50"])
    assert (out / "ladder-qat.json").is_file()


def test_render_ssim_of_a_real_face():
    """The shipped r50 on a held-out AFLW crop: both renders show the face, a mesh scores 1 against
    itself, and moving it by one pixel costs more in the lit geometry than in the textured 3D view."""
    from face3d_live.bench import ladder

    samples = ladder.held_out_aflw(1)
    if not samples:
        pytest.skip("no held-out AFLW data (../shared/data absent)")
    images = [samples[0][0]] * 2
    mesh = ladder.predict_meshes("original-fp32", images[:1])[0]
    meshes = np.stack([mesh, mesh + np.float32([1.0, 0.0, 0.0])])
    geometry = ladder.render_faces(meshes, images[0].shape[0])
    views = ladder.render_views(images, meshes)
    for render in (*geometry, *views):
        assert (render.max(-1) > 0).mean() > 0.15  # the face covers a good part of the render
    assert ladder.face_ssim(views[0], views[0]) == pytest.approx(1.0)
    moved_geometry = ladder.face_ssim(geometry[1], geometry[0])
    moved_view = ladder.face_ssim(views[1], views[0])
    assert 0.8 < moved_geometry < moved_view < 0.999


def test_optimize_and_the_gpu_entry_point_share_the_training_flags():
    from face3d_live.cli import build_parser
    from face3d_live.training.ladder_config import LadderConfig

    args = build_parser().parse_args(["optimize"])
    assert LadderConfig.from_args(args) == LadderConfig()
    args = build_parser().parse_args(
        ["optimize", "--ratio", "0.3", "--manual-weight", "0", "--distill-lr", "4e-4"]
    )
    cfg = LadderConfig.from_args(args)
    assert (cfg.ratio, cfg.manual_weight, cfg.distill_lr) == (0.3, 0.0, 4e-4)
