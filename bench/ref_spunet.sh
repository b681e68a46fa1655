#!/usr/bin/env bash
# Recreates .ref/pointcept_spunet/: the reference SpUNet-v1m1 of Pointcept for bench/backbone_step.py
# (--backbone sparse_unet --impl pointcept|both). Pointcept's code is never committed here: this script copies the
# one model file, unchanged, out of a local mirror of github.com/Pointcept/Pointcept at a fixed commit, and writes
# small stand-ins for the two pieces of Pointcept it imports (the MODELS registry and offset2batch).
#   bash bench/ref_spunet.sh [MIRROR_GIT_DIR]
# MIRROR_GIT_DIR: a clone or bare mirror holding COMMIT (default: the workplace's fetched mirror). The model file
# also imports spconv, timm (trunc_normal_) and torch_geometric (scatter, used only in enc_mode); the benchmark
# stands in for timm and torch_geometric when they are not installed (the CPU dev machine), not for spconv.
set -euo pipefail
mirror=${1:-/work/.mirror/Pointcept+Pointcept/repo}
commit=d74c646db6abec569d0f23e0c34e7ddfce142789 # Pointcept main, "Fix incompatible flash_attn in dockerfile (#588)"
model=pointcept/models/sparse_unet/spconv_unet_v1m1_base.py
dest=.ref/pointcept_spunet
grep -qx '/.ref/' .gitignore || { echo "run from the pcdag checkout root (its .gitignore ignores /.ref/)" >&2; exit 2; }
rm -rf "$dest"
mkdir -p "$dest/pointcept/models/sparse_unet" "$dest/pointcept/models/utils"
git -C "$mirror" show "$commit:$model" > "$dest/$model"
: > "$dest/pointcept/__init__.py"
: > "$dest/pointcept/models/__init__.py"
: > "$dest/pointcept/models/sparse_unet/__init__.py" # not Pointcept's: it would import every U-Net variant
cat > "$dest/pointcept/models/builder.py" <<'EOF'
"""Stand-in for Pointcept's model registry: only what the model file uses (MODELS.register_module)."""


class _Registry:
    def __init__(self):
        self.modules = {}

    def register_module(self, name=None):
        def add(cls):
            self.modules[name or cls.__name__] = cls
            return cls

        return add


MODELS = _Registry()
EOF
cat > "$dest/pointcept/models/utils/__init__.py" <<'EOF'
"""Stand-in for Pointcept's model utilities: offset2batch only."""
import torch


@torch.no_grad()
def offset2batch(offset):
    counts = torch.diff(offset, prepend=offset.new_zeros(1))
    return torch.repeat_interleave(torch.arange(len(counts), device=offset.device), counts)
EOF
echo "$commit $model" > "$dest/SOURCE"
echo "wrote $dest from $commit"
