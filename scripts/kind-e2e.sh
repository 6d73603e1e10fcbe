#!/usr/bin/env bash
# Runs tests/kind_e2e.rs against a throwaway kind cluster.
#
# Creates the kind cluster "informer-e2e" (reusing it when it already exists), points
# KUBECONFIG at a kubeconfig file for it alone, runs `cargo test --test kind_e2e`, and deletes
# the cluster afterwards unless KEEP_CLUSTER=1.
#
# Needs kind and a running Docker daemon. Extra arguments go to cargo test, for example:
#   scripts/kind-e2e.sh configset_lifecycle
#   KEEP_CLUSTER=1 scripts/kind-e2e.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER_NAME="${CLUSTER_NAME:-informer-e2e}"

if ! command -v kind >/dev/null 2>&1; then
    echo "kind is not installed. Install it (for example: go install sigs.k8s.io/kind@latest) and run this script again." >&2
    exit 1
fi
if ! command -v docker >/dev/null 2>&1; then
    echo "docker is not installed. kind runs its cluster nodes as Docker containers; install Docker and run this script again." >&2
    exit 1
fi
if ! docker info >/dev/null 2>&1; then
    echo "the Docker daemon is not reachable (docker info failed). Start it, or add this user to the docker group, and run this script again." >&2
    exit 1
fi

KUBECONFIG_DIR="$(mktemp -d)"
export KUBECONFIG="$KUBECONFIG_DIR/kubeconfig"

cleanup() {
    status=$?
    if [ "${KEEP_CLUSTER:-0}" = "1" ]; then
        echo "KEEP_CLUSTER=1: keeping kind cluster $CLUSTER_NAME; its kubeconfig is $KUBECONFIG"
        echo "delete it with: kind delete cluster --name $CLUSTER_NAME"
    else
        kind delete cluster --name "$CLUSTER_NAME" || true
        rm -rf "$KUBECONFIG_DIR"
    fi
    exit "$status"
}
trap cleanup EXIT

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
    echo "reusing kind cluster $CLUSTER_NAME"
    kind export kubeconfig --name "$CLUSTER_NAME" --kubeconfig "$KUBECONFIG"
else
    kind create cluster --name "$CLUSTER_NAME" --kubeconfig "$KUBECONFIG" --wait 120s
fi

# The tests run only against a context named kind-*; kind names it kind-$CLUSTER_NAME.
cargo test --test kind_e2e -- --nocapture "$@"
