#!/usr/bin/env bash
# Set up (if needed) and run the app on the bundled storyworld-tiny model. Extra args go to app.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_WAIT_POLICY=PASSIVE
exec .venv/bin/python app.py "$@"
