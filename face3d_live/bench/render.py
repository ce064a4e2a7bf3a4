"""`face3d-live bench render`: UV bake + resolve at several texture sizes, and a 1280×720 render.

``--compute`` picks the bake/resolve path (compute shaders or rasterised); each size also reports the
GL time of every pass (upload, depth, UV bake, pull-push, final resolve) from runs of their own.
Times are wall-clock medians with the GL queue drained (``ctx.finish()``) around each step, so they
hold on llvmpipe (which renders at finish) and on a GPU; ``gpu_ms`` is the GL timer query, meaningful
on a real GPU only (llvmpipe reports ~0).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import numpy as np

NAME = "render"
HELP = "UV texture bake (1024/2048/4096) and 1280x720 face render on the current GL (EGL headless)"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096], help="texture sizes")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per step (after 2 warm-up runs)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--samples", type=int, default=0, help="MSAA samples for the render (0 = off)")
    parser.add_argument("--gl", choices=["egl", "default"], default="egl", help="GL context backend")
    parser.add_argument(
        "--gl-device", type=int, default=None, help="EGL device index (default: the first hardware device)"
    )
    parser.add_argument(
        "--image", type=Path, default=None, help="photo to bake (default: the demo astronaut)"
    )
    parser.add_argument(
        "--compute",
        choices=["auto", "on", "off"],
        default="auto",
        help="bake/resolve as compute shaders (auto: on a hardware GPU with GL 4.3) or rasterised",
    )


def _timed(ctx, fn, repeats: int, warmup: int = 2) -> dict[str, float]:
    wall, gpu = [], []
    query = ctx.query(time=True)
    for i in range(warmup + repeats):
        ctx.finish()
        t0 = time.perf_counter_ns()
        with query:
            fn()
        ctx.finish()
        t1 = time.perf_counter_ns()
        if i >= warmup:
            wall.append((t1 - t0) / 1e6)
            gpu.append(query.elapsed / 1e6)
    # min: what the step costs with the CPU to itself (llvmpipe shares the cores with everything else)
    return {
        "ms": float(np.median(wall)),
        "min_ms": float(np.min(wall)),
        "p90_ms": float(np.percentile(wall, 90)),
        "gpu_ms": float(np.median(gpu)),
    }


def _passes(ctx, acc, image, face, repeats: int) -> dict[str, float]:
    """Median GL ms of each bake and resolve pass (its own runs: GL time queries do not nest)."""
    from face3d_live.render.profile import PassTimer

    timer = PassTimer(ctx)
    acc.timer = acc.baker.timer = timer
    runs: dict[str, list[float]] = {}
    try:
        for i in range(2 + repeats):
            acc.update(image, face)
            acc._resolve()
            for name, ms in timer.collect().items():
                if i >= 2:
                    runs.setdefault(name, []).append(ms)
    finally:
        acc.timer = acc.baker.timer = None
        timer.close()
    return {name: float(np.median(v)) for name, v in runs.items()}


def _load_image(path: Path | None) -> np.ndarray:
    if path is None:
        from face3d_live.capture.demo import demo_photo

        return demo_photo().copy()
    import cv2

    from face3d_live.errors import SourceError

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SourceError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def run(args: argparse.Namespace) -> dict:
    from face3d_live.errors import SourceError
    from face3d_live.reconstructor import Reconstructor
    from face3d_live.render import (
        AccumulatorConfig,
        FaceRenderer,
        OffscreenTarget,
        OrbitCamera,
        TextureAccumulator,
        create_context,
    )
    from face3d_live.render.baker import check_size

    image = _load_image(args.image)
    with Reconstructor("mediapipe") as rec:
        faces = rec.reconstruct(image)
    if not faces:
        raise SourceError("no face found in the benchmark image")
    face = faces[0]
    ctx = create_context(args.gl, args.gl_device)
    try:
        for size in args.sizes:
            check_size(ctx, size)
        renderer_name = ctx.info["GL_RENDERER"]
        load = os.getloadavg()[0]
        print(
            f"GL: {renderer_name} ({args.gl}), image {image.shape[1]}x{image.shape[0]}, {args.repeats} runs"
        )
        print(f"  load average at start {load:.2f} on {os.cpu_count()} CPUs (llvmpipe shares them)")
        print("  medians in ms; bake = frame upload + depth pass + UV pass (TextureAccumulator.update)")
        config = AccumulatorConfig(compute={"auto": None, "on": True, "off": False}[args.compute])
        bake: dict[str, dict] = {}
        texture = None
        for size in args.sizes:
            acc = TextureAccumulator(ctx, size, config)
            update = _timed(ctx, lambda acc=acc: acc.update(image, face), args.repeats)

            # private hooks of our own accumulator: time each resolve step on its own
            res = _timed(ctx, acc._resolve, args.repeats)  # mirror + pull-push fill

            def mips(acc=acc) -> None:
                acc._mipmapped = False
                acc.gpu_texture()

            mip = _timed(ctx, mips, args.repeats)
            read = _timed(ctx, lambda acc=acc: (setattr(acc, "_rgba", None), acc.texture()), args.repeats)
            passes = _passes(ctx, acc, image, face, args.repeats)
            path = "compute" if acc.compute else "raster"
            bake[str(size)] = {
                "bake": update, "resolve": res, "mipmaps": mip, "readback": read, "coverage": acc.coverage(),
                "path": path, "passes_gl_ms": passes,
            }  # fmt: skip
            print(
                f"  {size:>4}² ({path}): bake {update['ms']:7.2f}   resolve {res['ms']:7.2f}   "
                f"mipmaps {mip['ms']:7.2f}   read-back {read['ms']:7.2f} ms   (bake min {update['min_ms']:.2f}, "
                f"GL timer bake {update['gpu_ms']:.3f}, resolve {res['gpu_ms']:.3f} ms)"
            )
            print("         GL ms per pass: " + ", ".join(f"{k} {v:.3f}" for k, v in passes.items()))
            if texture is None or size == 2048:
                if texture is not None:
                    texture.close()
                texture = acc
            else:
                acc.close()

        render: dict[str, dict] = {}
        with (
            FaceRenderer(ctx) as renderer,
            OffscreenTarget(ctx, (args.width, args.height), args.samples) as target,
        ):
            renderer.set_face(face)
            renderer.set_texture(texture.gpu_texture())
            cam = OrbitCamera()

            def draw() -> None:
                cam.orbit(3.0, 0.0)
                renderer.render(target.fbo, cam)

            render["render"] = _timed(ctx, draw, args.repeats)
            render["render_readback"] = _timed(ctx, lambda: (draw(), target.read()), args.repeats)
        texture.close()
        res_name = f"{args.width}x{args.height}" + (f" MSAA{args.samples}" if args.samples else "")
        print(
            f"  render {res_name} (texture {texture.size}²): {render['render']['ms']:.2f} ms, "
            f"(min {render['render']['min_ms']:.2f}), with read-back {render['render_readback']['ms']:.2f} ms"
        )
        return {
            "gl_renderer": renderer_name,
            "gl_backend": args.gl,
            "image_size": [image.shape[1], image.shape[0]],
            "repeats": args.repeats,
            "loadavg_start": load,
            "loadavg_end": os.getloadavg()[0],
            "bake": bake,
            "render": {"size": [args.width, args.height], "samples": args.samples, **render},
        }
    finally:
        ctx.release()
