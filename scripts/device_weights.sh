#!/usr/bin/env bash
# The weights files together pass the device tool's 64 MiB upload limit. `out` moves them into the ignored
# .devcarry/weights/ and leaves relative symlinks in their place (the package still reads them here; links
# travel as links), so a device call carries only the file it needs (carry .devcarry/weights/NAME: the link
# resolves there). `in` puts the files back. Run `in` before committing.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=face3d_live/models/weights
case ${1:?usage: scripts/device_weights.sh out|in} in
out)
    mkdir -p .devcarry/weights
    for f in "$dir"/*.safetensors; do
        [[ -L $f ]] && continue
        name=$(basename "$f")
        mv "$f" ".devcarry/weights/$name" && ln -s "../../../.devcarry/weights/$name" "$f"
    done
    ;;
in)
    for f in "$dir"/*.safetensors; do
        [[ -L $f ]] || continue
        name=$(basename "$f")
        rm "$f" && mv ".devcarry/weights/$name" "$f"
    done
    ;;
*) echo "usage: scripts/device_weights.sh out|in" >&2; exit 2 ;;
esac
ls -la "$dir"
