"""`face3d-live build-engines`: TensorRT / TensorRT-RTX engines ahead of time, into the engine cache.

    face3d-live build-engines --model r50 --cc 86,89,120 --precision fp16,int8

TensorRT-RTX builds for named compute capabilities on a machine without a GPU. Engines already in
the cache (same ONNX content, precision, target, TensorRT version and profile) are not rebuilt.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from face3d_live.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build-engines",
        help="build TensorRT(-RTX) engines into the engine cache (works without a GPU for TensorRT-RTX)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="r50", choices=["r50"], help="model to build (default r50)")
    p.add_argument(
        "--weights", type=Path, default=None, help="weights file (default: the shipped r50 weights)"
    )
    p.add_argument(
        "--onnx",
        action="append",
        default=[],
        metavar="PRECISION=FILE",
        help="use this ONNX for a precision instead of exporting (e.g. int8=qat.onnx); repeatable",
    )
    p.add_argument(
        "--cc",
        default=None,
        help="target compute capabilities, comma-separated (86,89,120); default: this machine's GPU",
    )
    p.add_argument("--precision", default="fp16", help="comma-separated: fp32, fp16, int8 (default fp16)")
    p.add_argument(
        "--input-format",
        default="uint8",
        help="comma-separated engine inputs: uint8 (NHWC crops, what Reconstructor feeds; default), float32 (NCHW)",
    )
    p.add_argument("--profile", default="1,4,16", help="batch sizes MIN,OPT,MAX of the optimisation profile")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="engine cache folder (default: $FACE3D_ENGINES or the checkout's engines/)",
    )
    p.add_argument("--rebuild", action="store_true", help="rebuild even when the cache holds the engine")
    p.add_argument("--no-progress", action="store_true", help="no builder progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from face3d_live.inference import cuda
    from face3d_live.inference.spec import check_input_format, check_precision, default_cache_dir
    from face3d_live.inference.trt_build import (
        EngineCache,
        Profile,
        buildable_ccs,
        flavour,
        import_trt,
        is_rtx,
        parse_cc,
    )
    from face3d_live.models.r50_face import r50_spec

    precisions = [check_precision(p.strip()) for p in args.precision.split(",") if p.strip()]
    formats = [check_input_format(f.strip()) for f in args.input_format.split(",") if f.strip()]
    profile = Profile.parse(args.profile)
    trt = import_trt()
    if args.cc:
        ccs = [parse_cc(c) for c in args.cc.split(",") if c.strip()]
    elif not cuda.cuda_status():
        ccs = [parse_cc(cuda.compute_capability())]
    else:
        raise ConfigError("no GPU here: name the target compute capabilities, e.g. --cc 86,89,120")
    if is_rtx(trt) and (bad := [cc for cc in ccs if cc not in buildable_ccs(trt)]):
        raise ConfigError(
            f"TensorRT-RTX cannot target sm{', sm'.join(bad)}; choose from {', '.join(buildable_ccs(trt))}"
        )
    onnx_files = {}
    for item in args.onnx:
        prec, sep, path = item.partition("=")
        if not sep:
            raise ConfigError(f"--onnx takes PRECISION=FILE, got {item!r}")
        onnx_files[check_precision(prec)] = Path(path)
    if onnx_files and "uint8" in formats:
        raise ConfigError("--onnx files take float32 NCHW input: add --input-format float32")
    spec = r50_spec(args.weights)
    if onnx_files:
        spec = replace(spec, onnx_files=onnx_files)
    out = args.out or default_cache_dir()
    cache = EngineCache(out)
    print(
        f"{flavour(trt)}: {args.model} × {','.join(formats)} input × {','.join(precisions)} × "
        f"sm{',sm'.join(ccs)} -> {out}/"
    )
    rows = []
    for fmt in formats:
        name = spec.name + ("-u8" if fmt == "uint8" else "")
        for precision in precisions:
            onnx_path = spec.onnx(precision, out, fmt)
            for cc in ccs:
                entry = cache.get(
                    onnx_path,
                    name=name,
                    precision=precision,
                    cc=cc,
                    profile=profile,
                    input_shape=spec.sample_shape(fmt),
                    progress=not args.no_progress,
                    rebuild=args.rebuild,
                    trt=trt,
                )
                rows.append(entry)
                state = f"built in {entry.build_s:.1f} s" if entry.built else "cached"
                print(
                    f"  {fmt:7s} {precision:5s} sm{cc:4s} {entry.size_mb:6.1f} MB  {state:16s} {entry.path}"
                )
    print(
        f"{len(rows)} engine(s): {sum(r.built for r in rows)} built, {sum(not r.built for r in rows)} from cache"
    )
    return 0
