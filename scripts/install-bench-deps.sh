#!/usr/bin/env bash
# Installs the peer tools the benchmark compares against (Debian's restic and borg) and GNU time.
set -euo pipefail
need=()
command -v restic >/dev/null || need+=(restic)
command -v borg >/dev/null || need+=(borgbackup)
if ((${#need[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}"
fi
