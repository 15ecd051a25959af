#!/usr/bin/env bash
# Sets up the cache (seconds when it is already in place) and runs every
# test of the workspace: layer identities, parity with the Python references
# on committed fixtures, the real SmolLM2 model, and bad input.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
cargo test --workspace
