#!/bin/sh
# deps.sh - install the Debian 12 packages memsvc needs, only those that are missing
set -e
PKGS="build-essential pkg-config libucx-dev ucx-utils libjemalloc-dev liburing-dev libmsgpack-dev \
libcunit1-dev zlib1g-dev clang libclang-rt-14-dev libjansson-dev libsodium-dev libmicrohttpd-dev libsystemd-dev \
python3 python3-torch python3-numpy python3-msgpack python3-pytest"
missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0
echo "deps: installing:$missing"
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "deps: missing packages:$missing; run as root or install them" >&2; exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
