#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_WAIT_POLICY=PASSIVE
mkdir -p test-artifacts
exec .venv/bin/python -m pytest -q --junitxml=test-artifacts/junit.xml "$@"
