#!/usr/bin/env bash
# Build .devcarry/gpuenv/: what `bench render` and `bench app` need on the GPU machine beyond its own
# image (torch, numpy 2, opencv-headless, onnxruntime, ...). Carry that one folder; on the machine
# `source scripts/device_env.sh` installs it. Run here from anywhere in the repo; idempotent (the
# bundle is rebuilt from scratch, downloads are cached in .devcarry/cache/).
#
# Layout (all x86-64, Python 3.12):
#   gl/*.deb          glvnd loaders (libEGL/libGL/...), unpacked into / on the machine (its docs' recipe)
#   whl/*.whl         moderngl, glcontext, PyQt6-sip (pip --target /tmp/site)
#   litert.tar.xz     ai_edge_litert stripped to the Interpreter (the wheel is 22 MB, 60 MB unpacked)
#   qt.tar.xz         PyQt6 (QtCore + QtGui only) + Qt6 Core/Gui/DBus + ICU + the offscreen platform plugin
#   syslibs.tar.xz    fallback copies of the system libs Qt needs (X11, xkbcommon, glib, fontconfig, ...),
#                     used on the machine only for sonames it lacks, plus the DejaVu fonts the HUD asks for
#   mp/mediapipe/     the mediapipe .tflite models + face_mesh_connections.py, as a namespace package
set -euo pipefail

ROOT=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$ROOT"
PY=${PY:-.venv/bin/python}
OUT=.devcarry/gpuenv
CACHE=.devcarry/cache
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$CACHE/whl" "$CACHE/gl"

WHEELS=(moderngl==5.13.0 glcontext==3.1.0 pyqt6==6.11.0 pyqt6-qt6==6.11.2 pyqt6-sip==13.13.0 ai-edge-litert==2.3.0)
# Qt libs we need from PyQt6-Qt6; everything else in its 86 MB wheel is left out
QT_LIBS=(libQt6Core.so.6 libQt6Gui.so.6 libQt6DBus.so.6 libicui18n.so.73 libicuuc.so.73 libicudata.so.73)
QT_PLUGINS=(platforms/libqoffscreen.so platforms/libqminimal.so)
# provided by the image itself (glibc, the C++ runtime) or by the gl/ debs: never carried as fallbacks
SKIP_RE='^(ld-linux-x86-64|linux-vdso|libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|libEGL|libGL|libGLX|libGLdispatch|libOpenGL|libGLESv2|libQt6.*|libicu.*)\.so'

wheel() {  # wheel NAME: path of the cached py3.12 wheel, downloading it once
    local norm=${1//-/_}
    local f
    f=$(ls "$CACHE"/whl/"${norm%%==*}"-"${1##*==}"-*.whl .whl/"${norm%%==*}"-"${1##*==}"-*.whl 2>/dev/null | head -1 || true)
    if [[ -z $f ]]; then
        "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 \
            --platform manylinux1_x86_64 -d "$CACHE/whl" "$1" >&2
        f=$(ls "$CACHE"/whl/"${norm%%==*}"-"${1##*==}"-*.whl | head -1)
    fi
    echo "$f"
}

# --- GL loaders (Debian debs, per the device docs) ---
if ! ls "$CACHE"/gl/libegl1_*.deb >/dev/null 2>&1; then
    mkdir -p /tmp/amd64/partial
    o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
    apt-get "${o[@]}" update >/dev/null
    (cd "$CACHE/gl" && apt-get "${o[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 >/dev/null)
fi
mkdir -p "$STAGE/gpuenv/gl" "$STAGE/gpuenv/whl"
cp "$CACHE"/gl/*.deb "$STAGE/gpuenv/gl/"

# --- plain wheels ---
for w in moderngl==5.13.0 glcontext==3.1.0 pyqt6-sip==13.13.0; do cp "$(wheel $w)" "$STAGE/gpuenv/whl/"; done

# --- ai_edge_litert: only what `from ai_edge_litert.interpreter import Interpreter` loads, and the flatbuffer
# schema the torch BlazeFace port (detect/blazeface_torch.py) reads the graph with ---
mkdir -p "$STAGE/litert"
unzip -q "$(wheel ai-edge-litert==2.3.0)" 'ai_edge_litert/*' -d "$STAGE/litert/x"
mkdir -p "$STAGE/litert/t/ai_edge_litert"
for f in __init__.py interpreter.py metrics_portable.py metrics_interface.py schema_py_generated.py \
    _pywrap_litert_interpreter_wrapper.so libpywrap_litert_common.so; do
    cp "$STAGE/litert/x/ai_edge_litert/$f" "$STAGE/litert/t/ai_edge_litert/"
done
tar -C "$STAGE/litert/t" -cJf "$STAGE/gpuenv/litert.tar.xz" ai_edge_litert

# --- PyQt6 QtCore/QtGui + stripped Qt6, laid out as PyQt6/ in site-packages ---
Q=$STAGE/qt/t/PyQt6
mkdir -p "$Q/Qt6/lib" "$Q/Qt6/plugins/platforms"
unzip -q "$(wheel pyqt6==6.11.0)" 'PyQt6/__init__.py' 'PyQt6/QtCore.abi3.so' 'PyQt6/QtGui.abi3.so' -d "$STAGE/qt/t"
unzip -q "$(wheel pyqt6-qt6==6.11.2)" 'PyQt6/Qt6/lib/*' "${QT_PLUGINS[@]/#/PyQt6/Qt6/plugins/}" -d "$STAGE/qt/x"
for f in "${QT_LIBS[@]}"; do cp "$STAGE/qt/x/PyQt6/Qt6/lib/$f" "$Q/Qt6/lib/"; done
for f in "${QT_PLUGINS[@]}"; do cp "$STAGE/qt/x/PyQt6/Qt6/plugins/$f" "$Q/Qt6/plugins/platforms/"; done
# every Qt6/ICU lib the modules and plugins ask for must be in the stripped set
missing=$(for f in "$Q"/*.abi3.so "$Q"/Qt6/lib/* "$Q"/Qt6/plugins/platforms/*; do
    readelf -d "$f" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p'
done | grep -E '^lib(Qt6|icu)' | sort -u | while read -r n; do [[ -e $Q/Qt6/lib/$n ]] || echo "$n"; done)
[[ -z $missing ]] || { echo "device_bundle: stripped Qt lacks: $missing" >&2; exit 1; }
tar -C "$STAGE/qt/t" -cJf "$STAGE/gpuenv/qt.tar.xz" PyQt6

# --- fallback system libs (resolved here with ldd) + fonts ---
S=$STAGE/sys/syslibs
mkdir -p "$S/lib" "$S/fonts"
LD_LIBRARY_PATH=$Q/Qt6/lib ldd "$Q"/QtGui.abi3.so "$Q"/Qt6/plugins/platforms/*.so "$Q"/Qt6/lib/*.so.* |
    awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u | while read -r name path; do
    [[ $name =~ $SKIP_RE ]] && continue
    cp -L "$path" "$S/lib/$name"
done
[[ -e $S/lib/libX11.so.6 && -e $S/lib/libxkbcommon.so.0 ]] || { echo "device_bundle: ldd found no libX11/libxkbcommon here" >&2; exit 1; }
cp /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf /usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf "$S/fonts/"
tar -C "$STAGE/sys" -cJf "$STAGE/gpuenv/syslibs.tar.xz" syslibs

# --- mediapipe models as a namespace package: find_spec('mediapipe') finds a folder with no __init__ ---
MP=$("$PY" -c 'import importlib.util as u, os; print(os.path.dirname(u.find_spec("mediapipe").origin))')
M=$STAGE/gpuenv/mp/mediapipe
mkdir -p "$M/modules/face_detection" "$M/modules/face_landmark" "$M/python/solutions"
cp "$MP"/modules/face_detection/face_detection_short_range.tflite \
    "$MP"/modules/face_detection/face_detection_full_range_sparse.tflite "$M/modules/face_detection/"
cp "$MP"/modules/face_landmark/face_landmark.tflite "$M/modules/face_landmark/"
# geometry.mesh.triangles() reads FACEMESH_TESSELATION from this file's source; it imports nothing
cp "$MP"/python/solutions/face_mesh_connections.py "$M/python/solutions/"

rm -rf "$OUT"
mkdir -p "$(dirname "$OUT")"
mv "$STAGE/gpuenv" "$OUT"
du -ab "$OUT" | sort -k2 | awk '{printf "%10d  %s\n", $1, $2}' | grep -v '/mp/mediapipe/.*/' || true
echo "total: $(du -sb "$OUT" | cut -f1) bytes ($(du -sh "$OUT" | cut -f1)) in $OUT"
