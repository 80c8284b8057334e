#!/usr/bin/env bash
# Build the wheel folders that bench/device/run_gpu.sh needs on a lent GPU machine (run HERE,
# on a machine with pip and a package registry). Output under .whl/ (git-ignored):
#   .whl/core/     the small wheels: open_clip_torch, ftfy, wcwidth, lancedb's and pylance's
#                  pure-Python needs the GPU image lacks (pydantic & co.)            (~7 MB)
#   .whl/lance-1/  first part of lance.tar.xz: lancedb + pylance unpacked, xz-compressed
#   .whl/lance-2/  the rest of it
# Why parts: lancedb (75 MB) + pylance (85 MB) wheels are 160 MB; a device call carries at most
# 64 MiB. Unpacked and xz-compressed they are ~95 MB: two calls (README.md, "Carrying").
# Needs: pip, xz, split, sha256sum. Takes a few minutes (xz -9 on ~410 MB).
# CORE_ONLY=1: only .whl/core (seconds), enough for `run_gpu.sh breakdown`.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
PART_BYTES=${PART_BYTES:-58000000}
PLAT=(--python-version 3.12 --implementation cp --abi cp312 --only-binary=:all:
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64)
# Exactly what the GPU image lacks (KINDS.md lists what it has: torch, torchvision, timm,
# huggingface-hub, safetensors, regex, tqdm, pyarrow, numpy, pillow, pandas, urllib3,
# python-dateutil, packaging, pytest...). Computed with `pip install --dry-run --report`
# for a Python 3.12 target, minus that list. typing_extensions is carried because pydantic
# 2.14 needs a recent one.
CORE=(open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 lance-namespace==0.13.0
      lance-namespace-urllib3-client==0.13.0 deprecation==2.1.0 overrides==7.7.0 pydantic==2.14.4
      pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0)
BIG=(lancedb==0.40.0 pylance==14.0.2)
if [ "${CORE_ONLY:-0}" = 1 ]; then
    rm -rf .whl/core && mkdir -p .whl/core
    "$PY" -m pip download -q --no-deps "${PLAT[@]}" -d .whl/core "${CORE[@]}" 2>&1 | grep -v "is ignored" || true
    [ "$(ls .whl/core/*.whl | wc -l)" -eq "${#CORE[@]}" ] || { echo "pack_wheels: some core wheels are missing" >&2; exit 1; }
    echo "pack_wheels: .whl/core ($(du -sh .whl/core | cut -f1))"
    exit 0
fi
rm -rf .whl/core .whl/lance-1 .whl/lance-2 .whl/.stage
mkdir -p .whl/core .whl/lance-1 .whl/lance-2 .whl/.stage/big .whl/.stage/site
"$PY" -m pip download -q --no-deps "${PLAT[@]}" -d .whl/core "${CORE[@]}" 2>&1 | grep -v "is ignored" || true
"$PY" -m pip download -q --no-deps "${PLAT[@]}" -d .whl/.stage/big "${BIG[@]}" 2>&1 | grep -v "is ignored" || true
[ "$(ls .whl/core/*.whl | wc -l)" -eq "${#CORE[@]}" ] || { echo "pack_wheels: some core wheels are missing" >&2; exit 1; }
[ "$(ls .whl/.stage/big/*.whl | wc -l)" -eq 2 ] || { echo "pack_wheels: lancedb/pylance wheels missing" >&2; exit 1; }
for w in .whl/.stage/big/*.whl; do (cd .whl/.stage/site && unzip -q -o "../big/$(basename "$w")"); done
tar -C .whl/.stage/site -cf - . | xz -9 -T2 > .whl/.stage/lance.tar.xz
(cd .whl/.stage && sha256sum lance.tar.xz > lance.tar.xz.sha256)
split -b "$PART_BYTES" -d -a 1 .whl/.stage/lance.tar.xz .whl/.stage/lance.tar.xz.part
parts=(.whl/.stage/lance.tar.xz.part*)
[ "${#parts[@]}" -eq 2 ] || { echo "pack_wheels: expected 2 parts, got ${#parts[@]}: raise PART_BYTES" >&2; exit 1; }
mv .whl/.stage/lance.tar.xz.part0 .whl/lance-1/
mv .whl/.stage/lance.tar.xz.part1 .whl/lance-2/
cp .whl/.stage/lance.tar.xz.sha256 .whl/lance-1/
cp .whl/.stage/lance.tar.xz.sha256 .whl/lance-2/
rm -rf .whl/.stage
du -sh .whl/core .whl/lance-1 .whl/lance-2
