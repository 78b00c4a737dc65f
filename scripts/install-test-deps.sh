#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, if they are missing. Idempotent; no stdin.
#
# Besides coreutils and tar: the real servers of tests/support/ (dbservers.py, dockerd.py,
# dbcontainers.py) - PostgreSQL 15, MariaDB, Redis, a Docker engine - plus docker-compose and
# sqlite3, systemd-analyze (the unit files of deploy/systemd/), and Prometheus with promtool and
# Alertmanager (the alert rules of deploy/prometheus/, scraped metrics). apt must not start any of
# these services: the tests start their own on free ports of 127.0.0.1. So while installing,
# /usr/sbin/policy-rc.d answers 101 ("action forbidden") to every maintainer script; a
# policy-rc.d that was already there is left alone.
set -euo pipefail

installed() { # installed PACKAGE: whether dpkg has it fully installed
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

need=()
command -v sha256sum >/dev/null || need+=(coreutils)
command -v tar >/dev/null || need+=(tar)
{ command -v dockerd >/dev/null || [[ -x /usr/sbin/dockerd ]]; } || need+=(docker.io)
[[ -x /usr/lib/postgresql/15/bin/initdb ]] && installed postgresql-15 || need+=(postgresql)
{ [[ -x /usr/sbin/mariadbd ]] && command -v mariadb-install-db >/dev/null; } ||
    need+=(mariadb-server)
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || need+=(redis-server)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v sqlite3 >/dev/null || need+=(sqlite3)
command -v systemd-analyze >/dev/null || need+=(systemd) # verifies deploy/systemd/
command -v promtool >/dev/null && command -v prometheus >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)

if ((${#need[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    policy=/usr/sbin/policy-rc.d
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\n# written by install-test-deps.sh while installing\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    echo "install-test-deps: installing ${need[*]}" >&2
    apt-get update -qq </dev/null
    apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${need[@]}" </dev/null
fi
