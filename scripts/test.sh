#!/usr/bin/env bash
# Runs the checks and the test suite. Installs protoc and etcd when they are missing.
# The tests start their own etcd servers on free loopback ports.
# Long runs: INFORMER_SOAK=1 and INFORMER_CHAOS_SEEDS=N (see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test

cargo fmt --check
cargo clippy --all-targets --all-features -- -D warnings
# The smoke tests run the example binaries, which `cargo test` builds only as test harnesses.
cargo build --examples --all-features
cargo test --all-targets --all-features
cargo test --doc --all-features
