#!/usr/bin/env bash
# Build an emulated arm64 Debian userland with the aarch64 TVM runtime, so TVM artifacts cross-compiled
# for ARM boards can be run (and served over RPC) on an x86 machine under qemu-aarch64.
#
#   scripts/arm64_userland.sh DEST
#
# Nothing is installed on the host and nothing runs as arm64 code here: debootstrap only *downloads* a
# bookworm minbase + python3 (≈85 MB of .debs), each .deb is unpacked with dpkg-deb -x, and pip downloads
# the aarch64 wheels and they are unzipped into DEST/opt/site. Run programs with
#   env -u PYTHONDONTWRITEBYTECODE QEMU_LD_PREFIX=DEST PYTHONPATH=DEST/opt/site qemu-aarch64 DEST/usr/bin/python3.11
# Needs (Debian packages): debootstrap qemu-user (and the aarch64 cross g++ to build artifacts).
# The result appears at DEST only when complete (built beside it, then renamed); edgevit caches it
# keyed by this file's hash, so editing the pins below rebuilds it.
set -euo pipefail

DEST=${1:?usage: arm64_userland.sh DEST}
SUITE=bookworm  # python3.11, the CPython the cp311 wheels below are built for
MIRROR=${EDGEVIT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PYTHON=${PYTHON:-python3}
# Same versions as pyproject.toml pins on the host (TVM 0.27.0.post1 works only with ffi 0.1.14.post1).
WHEELS=(apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1 numpy==2.4.6 ml_dtypes==0.6.0
        typing_extensions==4.16.0 psutil==7.2.2 cloudpickle==3.1.2 tornado==6.6.1)

for tool in debootstrap dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "arm64_userland.sh: '$tool' not found (apt-get install debootstrap)" >&2; exit 2; }
done

DEST=$(realpath -m "$DEST")
WORK=$(mktemp -d "$DEST.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/debs" "$WORK/root/opt/site" "$WORK/wheels"

echo "[arm64-userland] downloading $SUITE arm64 minbase + python3 from $MIRROR" >&2
debootstrap --arch=arm64 --variant=minbase --download-only --include=python3 \
  "$SUITE" "$WORK/debs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
  || { tail -n 20 "$WORK/debootstrap.log" >&2; exit 1; }

echo "[arm64-userland] unpacking $(ls "$WORK"/debs/var/cache/apt/archives/*.deb | wc -l) packages" >&2
for deb in "$WORK"/debs/var/cache/apt/archives/*.deb; do
  dpkg-deb -x "$deb" "$WORK/root"
done

echo "[arm64-userland] downloading aarch64 wheels: ${WHEELS[*]}" >&2
"$PYTHON" -m pip download -q --disable-pip-version-check --only-binary=:all: --no-deps \
  --python-version 3.11 --implementation cp \
  --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 \
  -d "$WORK/wheels" "${WHEELS[@]}"
for whl in "$WORK"/wheels/*.whl; do
  "$PYTHON" -m zipfile -e "$whl" "$WORK/root/opt/site"
done

test -x "$WORK/root/usr/bin/python3.11" || { echo "arm64_userland.sh: python3.11 missing from the userland" >&2; exit 1; }
rm -rf "$DEST"
mv "$WORK/root" "$DEST"
echo "[arm64-userland] ready: $DEST" >&2
