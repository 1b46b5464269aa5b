#!/usr/bin/env bash
# Installs what haven needs on a Debian machine, only what is missing:
#   - PostgreSQL 15 server binaries (postgresql-15) when /usr/lib/postgresql/15/bin/pg_ctl is absent;
#   - with --test: etcd (etcd-server), ZooKeeper (zookeeper), HAProxy (haproxy) for the test suite;
#   - with --bench: wrk (wrk) for `make bench`;
#   - as root: the system group `haven` and users `haven` (DCS keeper, brain) and `haven-api` (REST API),
#     with postgres added to the group;
#   - a virtualenv built from Debian's /usr/bin/python3 (readable by every service user) with haven in it.
# Package installs never start services and never create a default PostgreSQL cluster on port 5432.
set -euo pipefail

venv=""
test_deps=0
bench_deps=0
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) venv="$2"; shift 2 ;;
    --test) test_deps=1; shift ;;
    --bench) bench_deps=1; shift ;;
    *) echo "usage: $0 --venv DIR [--test] [--bench]" >&2; exit 2 ;;
  esac
done
repo=$(cd "$(dirname "$0")/.." && pwd)
[ -n "$venv" ] || venv=$("$repo/scripts/venv-dir")

packages=()
[ -x /usr/lib/postgresql/15/bin/pg_ctl ] || packages+=(postgresql-15)
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || packages+=(python3-venv)
if [ "$test_deps" = 1 ]; then
  command -v etcd >/dev/null || packages+=(etcd-server)
  [ -f /usr/share/java/zookeeper.jar ] || packages+=(zookeeper)
  command -v haproxy >/dev/null || packages+=(haproxy)
  command -v openssl >/dev/null || packages+=(openssl)  # the TLS tests make their certificates with it
fi
if [ "$bench_deps" = 1 ]; then
  command -v wrk >/dev/null || packages+=(wrk)
fi

if [ ${#packages[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing packages: ${packages[*]}; run as root or install them first" >&2
    exit 1
  fi
  echo "setup: installing ${packages[*]}"
  mkdir -p /etc/postgresql-common
  [ -f /etc/postgresql-common/createcluster.conf ] || echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold "${packages[@]}" >/dev/null
  [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

if [ "$(id -u)" = 0 ]; then
  getent group haven >/dev/null || groupadd --system haven
  for user in haven haven-api; do
    id -u "$user" >/dev/null 2>&1 || useradd --system --gid haven --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "$user"
  done
  id -nG postgres | tr ' ' '\n' | grep -qx haven || usermod -aG haven postgres
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating the virtualenv $venv from /usr/bin/python3"
  mkdir -p "$(dirname "$venv")"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip >/dev/null
fi
# Install the project editable when the service users can read the checkout, else as a copy.
stamp="$venv/.haven-installed"
want="$(sha256sum "$repo/pyproject.toml" | cut -c1-16) $repo"
if [ "$venv" = "$repo/.venv" ]; then mode=editable; else mode=copy; fi
if [ "$mode" = copy ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing haven into $venv ($mode)"
  if [ "$mode" = editable ]; then
    "$venv/bin/pip" install -q -e "$repo[dev]"
  else
    "$venv/bin/pip" install -q "$repo[dev]" && "$venv/bin/pip" install -q --no-deps --force-reinstall "$repo"
  fi
  echo "$want" > "$stamp"
fi
chmod -R o+rX "$venv" 2>/dev/null || true
