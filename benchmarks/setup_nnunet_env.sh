#!/usr/bin/env bash
# Create a separate virtual environment with nnU-Net v2 from PyPI, for benchmarks/preprocess_speed.py.
#
#   bash benchmarks/setup_nnunet_env.sh [VENV_DIR]        (default /work/bench_pp/nnunet_venv)
#   NNUNET_VERSION=2.6.0 DNA_VERSION=0.3.1 bash benchmarks/setup_nnunet_env.sh   # pin another release
#
# Why the order matters: a bare `torch` requirement resolves to the newest (multi-GB CUDA) build.  We install the
# CPU torch 2.13.0 first and keep it as a constraint, so nnunetv2's chain
# dynamic-network-architectures 0.4.x -> timm -> torchvision resolves to torchvision 0.28 (the release made for
# torch 2.13) instead of upgrading torch.  Fallback if no matching torchvision can be found: nnunetv2 2.6.0, the
# last release accepting dynamic-network-architectures 0.3.x, which has no timm/torchvision dependency
# (NNUNET_VERSION=2.6.0 DNA_VERSION=0.3.1; 2.6.0 already writes blosc2).
set -euo pipefail

VENV_DIR="${1:-/work/bench_pp/nnunet_venv}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
NNUNET_VERSION="${NNUNET_VERSION:-2.8.1}"
DNA_VERSION="${DNA_VERSION:-}"            # empty: let pip choose within nnunetv2's own bounds
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3

if [[ -x "$VENV_DIR/bin/nnUNetv2_plan_and_preprocess" ]]; then
    echo "nnU-Net venv already present: $VENV_DIR ($("$VENV_DIR/bin/python" -c 'import importlib.metadata as m; print("nnunetv2", m.version("nnunetv2"))'))"
    exit 0
fi

echo "creating $VENV_DIR with $("$PYTHON" --version)"
"$PYTHON" -m venv "$VENV_DIR"
PIP=("$VENV_DIR/bin/python" -m pip)

CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "torch==$TORCH_VERSION" > "$CONSTRAINTS"
[[ -n "$DNA_VERSION" ]] && echo "dynamic-network-architectures==$DNA_VERSION" >> "$CONSTRAINTS"

echo "installing torch==$TORCH_VERSION (CPU) first"
"${PIP[@]}" install "torch==$TORCH_VERSION"
echo "installing nnunetv2==$NNUNET_VERSION under constraints: $(tr '\n' ' ' < "$CONSTRAINTS")"
"${PIP[@]}" install -c "$CONSTRAINTS" "nnunetv2==$NNUNET_VERSION"

# Fail loudly if anything replaced the CPU torch with a CUDA build.
"$VENV_DIR/bin/python" - <<'EOF'
import importlib.metadata as m
import torch
assert torch.version.cuda is None, f"a CUDA torch build was installed: {torch.__version__}"
print("torch", torch.__version__, "| nnunetv2", m.version("nnunetv2"),
      "| dynamic-network-architectures", m.version("dynamic-network-architectures"))
EOF
"$VENV_DIR/bin/nnUNetv2_plan_and_preprocess" -h > /dev/null
echo "OK: $VENV_DIR/bin/nnUNetv2_plan_and_preprocess works"
