# shellcheck shell=bash
# Source on the GPU machine from the repo root (carry .devcarry/gpuenv, built by scripts/device_bundle.sh):
#   source scripts/device_env.sh && python3 -c "...; main(['bench', 'render', ...])"
# Installs the bundle into /tmp/site (+ /tmp/devenv), exports PYTHONPATH, LD_LIBRARY_PATH (fallback libs
# only for sonames the image lacks), FONTCONFIG_FILE, QT_QPA_PLATFORM=offscreen and the NVIDIA EGL
# vendor file, then checks GL (EGL), Qt text drawing and one BlazeFace model. Returns non-zero with one
# "device_env: FAILED ..." line if anything is missing. Here (no GPU): DEVICE_ENV_LOCAL=1 skips the debs
# and accepts a software GL renderer.

_devenv_fail() {
    echo "device_env: FAILED: $*" >&2
    return 1
}

_devenv_main() {
    local b=$PWD/.devcarry/gpuenv site=/tmp/site d=/tmp/devenv
    [[ -d $b ]] || { _devenv_fail "$b missing: run scripts/device_bundle.sh here and carry .devcarry/gpuenv"; return 1; }
    local f
    for f in gl whl litert.tar.xz qt.tar.xz syslibs.tar.xz mp/mediapipe; do
        [[ -e $b/$f ]] || { _devenv_fail "$b/$f missing: rebuild with scripts/device_bundle.sh"; return 1; }
    done
    if [[ -z ${DEVICE_ENV_LOCAL:-} ]]; then
        for f in "$b"/gl/*.deb; do dpkg -x "$f" / || { _devenv_fail "dpkg -x $f"; return 1; }; done
        ldconfig
    fi
    # pip --target --upgrade replaces whole top-level folders (PyQt6/), so the tarballs go in after it
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        "$b"/whl/*.whl >/dev/null || { _devenv_fail "pip install of $b/whl/*.whl"; return 1; }
    rm -rf "$site/ai_edge_litert" "$site/PyQt6/Qt6" "$d"
    mkdir -p "$d/fallback"
    for f in litert qt; do tar -xJf "$b/$f.tar.xz" -C "$site" || { _devenv_fail "unpacking $f.tar.xz"; return 1; }; done
    tar -xJf "$b/syslibs.tar.xz" -C "$d" || { _devenv_fail "unpacking syslibs.tar.xz"; return 1; }
    # a carried lib is used only where the image has no lib of that soname: never shadow a newer one
    local cache name n=0
    cache=$(ldconfig -p)
    for f in "$d"/syslibs/lib/*; do
        name=${f##*/}
        if ! grep -q "^[[:space:]]*${name//./\\.} (" <<<"$cache"; then
            ln -s "$f" "$d/fallback/$name"
            n=$((n + 1))
        fi
    done
    [[ $n -gt 0 ]] && export LD_LIBRARY_PATH=$d/fallback${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    cat >"$d/fonts.conf" <<EOF
<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig>
  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>
  <dir>$d/syslibs/fonts</dir>
  <cachedir>$d/fontcache</cachedir>
</fontconfig>
EOF
    export FONTCONFIG_FILE=$d/fonts.conf QT_QPA_FONTDIR=$d/syslibs/fonts QT_QPA_PLATFORM=offscreen
    export PYTHONPATH=$site:$b/mp${PYTHONPATH:+:$PYTHONPATH}
    local egl=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
    [[ -f $egl ]] && export __EGL_VENDOR_LIBRARY_FILENAMES=$egl
    local vk=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    [[ -f $vk ]] && export VK_DRIVER_FILES=$vk

    # one line: GL renderer, Qt text pixels, BlazeFace output, mesh triangles; fails with the first error
    DEVENV_FALLBACK_LIBS=$n python3 - <<'EOF' || { _devenv_fail "check above (see the traceback)"; return 1; }
import os, sys
import numpy as np
try:
    import moderngl
    ctx = moderngl.create_standalone_context(backend="egl")
    gl = ctx.info["GL_RENDERER"]
    ctx.release()
    if "llvmpipe" in gl.lower() and not os.environ.get("DEVICE_ENV_LOCAL"):
        raise RuntimeError(f"EGL gave the software renderer {gl!r}, not the GPU")
    from PyQt6.QtCore import QT_VERSION_STR, Qt
    from PyQt6.QtGui import QFont, QFontInfo, QGuiApplication, QImage, QPainter
    app = QGuiApplication(["device_env"])
    img = QImage(120, 30, QImage.Format.Format_RGB32)
    img.fill(Qt.GlobalColor.black)
    p = QPainter(img)
    font = QFont("DejaVu Sans Mono")
    p.setFont(font)
    p.setPen(Qt.GlobalColor.white)
    p.drawText(4, 22, "fps 60.0")
    p.end()
    lit = int(np.count_nonzero(np.frombuffer(img.constBits().asstring(img.sizeInBytes()), np.uint32) & 0xFFFFFF))
    family = QFontInfo(font).family()
    if lit == 0:
        raise RuntimeError(f"QPainter drew no text pixels (font {family!r}): fonts missing?")
    from face3d_live.geometry.mesh import triangles
    from face3d_live.models.tflite import TFLiteModel, bundled_model_path
    m = TFLiteModel(bundled_model_path("face_detection_short_range.tflite"))
    outs = m.run(np.zeros(m.input_shape, np.float32))
    tris = len(triangles())
    if tris != 852:
        raise RuntimeError(f"face mesh has {tris} triangles, expected 852")
except Exception as exc:
    print(f"device_env: check failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    sys.exit(1)
print(
    f"device_env: ok: GL {gl!r}; Qt {QT_VERSION_STR} offscreen, text {lit} px in {family!r}; "
    f"BlazeFace outputs {[tuple(o.shape) for o in outs]}; mesh {tris} triangles; "
    f"fallback libs {os.environ['DEVENV_FALLBACK_LIBS']}"
)
EOF
}

_devenv_main
