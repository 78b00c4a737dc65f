#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, if they are missing. Idempotent; no stdin.
set -euo pipefail
need=()
command -v sha256sum >/dev/null || need+=(coreutils)
command -v tar >/dev/null || need+=(tar)
if ((${#need[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}"
fi
