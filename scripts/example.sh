#!/usr/bin/env bash
# Runs the example controller. Without --endpoints it runs on the embedded in-memory source.
# Extra arguments go to the example, for example: scripts/example.sh --endpoints http://127.0.0.1:2379
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
exec cargo run --example etcd_config_watcher -- "$@"
