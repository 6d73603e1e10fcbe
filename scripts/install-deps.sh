#!/usr/bin/env bash
# Installs the system packages the build and the tests need, when they are missing:
# protoc (etcd-client's build compiles etcd's protobuf files) and, with --test, etcd 3.4.
# Runs apt-get as root, or through sudo when not root.
set -euo pipefail

packages=()
command -v protoc >/dev/null 2>&1 || packages+=(protobuf-compiler)
if [[ "${1:-}" == "--test" ]]; then
  command -v etcd >/dev/null 2>&1 || packages+=(etcd-server)
fi
[[ ${#packages[@]} -eq 0 ]] && exit 0

sudo=()
[[ $(id -u) -ne 0 ]] && sudo=(sudo)
echo "installing ${packages[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
# Debian's etcd-server package starts a system etcd on the default ports. The tests start their
# own servers on free ports, so the system one is stopped to leave the machine quiet.
if [[ " ${packages[*]} " == *" etcd-server "* ]]; then
  "${sudo[@]}" systemctl disable --now etcd >/dev/null 2>&1 || "${sudo[@]}" service etcd stop >/dev/null 2>&1 || true
fi
