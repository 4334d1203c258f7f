#!/usr/bin/env bash
# Install the course into a virtual environment (default: .venv beside this file).
#
#   ./install.sh                 CPU or GPU, whatever PyPI's torch wheel is for this platform
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu ./install.sh
#                                Linux without a GPU: the CPU build, without the CUDA libraries
#   VENV=/path/to/env ./install.sh
#
# torch is installed first and pinned, so that nothing installed afterwards can replace it
# with another build.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${VENV:-$here/.venv}"
python="${PYTHON:-python3}"
torch_version="2.13.0"

if [ ! -x "$venv/bin/python" ]; then
    echo "creating the virtual environment $venv"
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip)
"${pip[@]}" install --quiet --upgrade pip

echo "installing torch $torch_version"
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "${pip[@]}" install --quiet "torch==$torch_version" --index-url "$TORCH_INDEX_URL"
else
    "${pip[@]}" install --quiet "torch==$torch_version"
fi

echo "installing the course and its tools"
"${pip[@]}" install --quiet -e "$here[dev]" "torch==$torch_version"
"${pip[@]}" check

echo "done: activate with 'source $venv/bin/activate', then run 'jupyter lab' or 'course --help'"
