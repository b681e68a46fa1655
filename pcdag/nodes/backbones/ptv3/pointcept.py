"""Pointcept / Sonata checkpoints: parameter names of pcdag's PointTransformerV3 <-> Pointcept's ``PT-v3m2``.

The two models hold the same tensors in the same layouts (the sparse convolution weight is ``[out, 3, 3, 3, in]``
in both, the mask token ``[1, C0]``); only the names differ, by the rules of ``NAME_RULES`` (the table of
``docs/pointcept.md``). ``export_backbone`` writes ``{"config", "state_dict"}`` as Sonata's releases do (the
config is Pointcept's ``PT-v3m2`` keyword arguments), ``import_backbone`` reads such a file, a bare state dict or a
Pointcept training checkpoint (``module.`` and e.g. ``student.backbone.`` prefixes are taken off).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pcdag.atomic import atomic_write_bytes
from pcdag.graphs.backbone import WeightsError, read_weights_file, weight_problems
from pcdag.nodes.backbones.ptv3.config import PRESETS
from pcdag.nodes.backbones.ptv3.model import PointTransformerV3Module, PTv3Config

# (pcdag name, Pointcept name); {s} stage/level, {i} block, {p} weight|bias. Block names follow in BLOCK_RULES.
NAME_RULES: tuple[tuple[str, str], ...] = (
    ("stem.linear.{p}", "embedding.stem.linear.{p}"),
    ("stem.norm.{p}", "embedding.stem.norm.{p}"),
    ("mask_token", "embedding.mask_token"),
    ("stages.{s}.down.proj.{p}", "enc.enc{s}.down.proj.{p}"),
    ("stages.{s}.down.norm.{p}", "enc.enc{s}.down.norm.0.{p}"),
    ("decoder.{s}.up.coarse.linear.{p}", "dec.dec{s}.up.proj.0.{p}"),
    ("decoder.{s}.up.coarse.norm.{p}", "dec.dec{s}.up.proj.1.{p}"),
    ("decoder.{s}.up.skip.linear.{p}", "dec.dec{s}.up.proj_skip.0.{p}"),
    ("decoder.{s}.up.skip.norm.{p}", "dec.dec{s}.up.proj_skip.1.{p}"),
)
BLOCK_RULES: tuple[tuple[str, str], ...] = (
    ("cpe.conv.{p}", "cpe.0.{p}"),
    ("cpe.linear.{p}", "cpe.1.{p}"),
    ("cpe.norm.{p}", "cpe.2.{p}"),
    ("norm1.{p}", "norm1.0.{p}"),
    ("attn.qkv.{p}", "attn.qkv.{p}"),
    ("attn.proj.{p}", "attn.proj.{p}"),
    ("norm2.{p}", "norm2.0.{p}"),
    ("mlp.fc1.{p}", "mlp.0.fc1.{p}"),
    ("mlp.fc2.{p}", "mlp.0.fc2.{p}"),
)
_BLOCK_PARENTS = (
    ("stages.{s}.blocks.{i}.", "enc.enc{s}.block{i}."),
    ("decoder.{s}.blocks.{i}.", "dec.dec{s}.block{i}."),
)
RULES = NAME_RULES + tuple((a + x, b + y) for a, b in _BLOCK_PARENTS for x, y in BLOCK_RULES)
_GROUPS = {"s": r"(?P<s>\d+)", "i": r"(?P<i>\d+)", "p": r"(?P<p>weight|bias)"}


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w)\}", template)  # literal, group, literal, ...
    return re.compile("".join(re.escape(x) if k % 2 == 0 else _GROUPS[x] for k, x in enumerate(parts)) + "$")


_TO_POINTCEPT = [(_pattern(ours), theirs) for ours, theirs in RULES]
_FROM_POINTCEPT = [(_pattern(theirs), ours) for ours, theirs in RULES]


def _match(name: str, rules: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, template in rules:
        found = pattern.match(name)
        if found:
            return template.format(**found.groupdict())
    return None


def _rename(name: str, rules: list[tuple[re.Pattern[str], str]], direction: str) -> str:
    renamed = _match(name, rules)
    if renamed is None:
        raise KeyError(
            f"{direction}: no rule for parameter {name!r} (NAME_RULES in pcdag/nodes/backbones/ptv3/pointcept.py)"
        )
    return renamed


def to_pointcept(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """pcdag names -> Pointcept ``PT-v3m2`` names (same tensors, same layouts)."""
    return {_rename(k, _TO_POINTCEPT, "to_pointcept"): v for k, v in state_dict.items()}


def from_pointcept(state_dict: Mapping[str, torch.Tensor], prefix: str | None = None) -> dict[str, torch.Tensor]:
    """Pointcept names -> pcdag names. ``prefix`` (e.g. ``"student.backbone."``) is taken off first; without it a
    DDP ``module.`` is dropped and a single ``...backbone.`` prefix is found by itself."""
    state = _strip(dict(state_dict), prefix)
    return {_rename(k, _FROM_POINTCEPT, "from_pointcept"): v for k, v in state.items()}


def _strip(state: dict[str, Any], prefix: str | None) -> dict[str, Any]:
    if prefix is None:
        if all(k.startswith("module.") for k in state):
            state = {k[len("module.") :]: v for k, v in state.items()}
        anchor = "embedding.stem.linear.weight"
        found = sorted(k[: -len(anchor)] for k in state if k.endswith(anchor))
        if len(found) > 1:
            raise ValueError(f"the checkpoint holds several backbones ({', '.join(found)}); pass prefix= to pick one")
        prefix = found[0] if found else ""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def pointcept_config(config: PTv3Config) -> dict[str, Any]:
    """Keyword arguments of Pointcept's / Sonata's ``PointTransformerV3`` for this architecture."""
    enc = config.mode == "encoder"
    return dict(
        in_channels=config.in_channels,
        order=list(config.orders),
        stride=[2, 2, 2, 2],
        enc_depths=list(config.enc_depths),
        enc_channels=list(config.enc_channels),
        enc_num_head=list(config.enc_heads),
        enc_patch_size=list(config.enc_patch_size),
        dec_depths=list(config.dec_depths),
        dec_channels=list(config.dec_channels),
        dec_num_head=list(config.dec_heads),
        dec_patch_size=list(config.dec_patch_size),
        mlp_ratio=config.mlp_ratio,
        qkv_bias=True,
        drop_path=config.drop_path,
        shuffle_orders=config.shuffle_orders,
        pre_norm=True,
        enable_rpe=False,
        enc_mode=enc,
        mask_token=config.mask_token,
    )


def export_backbone(module: PointTransformerV3Module, path: str | Path) -> None:
    """Write the backbone as a Sonata-style checkpoint ``{"config", "state_dict"}`` (atomic)."""
    state = {k: v.detach().cpu().clone() for k, v in to_pointcept(module.state_dict()).items()}
    buffer = io.BytesIO()
    torch.save({"config": pointcept_config(module.config), "state_dict": state}, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def import_backbone(module: PointTransformerV3Module, path: str | Path, prefix: str | None = None) -> None:
    """Load a Pointcept / Sonata checkpoint into ``module``; refuses (``WeightsError``) unless every parameter of
    ``module`` is present with its shape and nothing else is left over. One exception: an encoder-decoder module
    (fine-tuning) takes an encoder-only checkpoint (pre-training) and keeps its freshly initialised decoder."""
    path = Path(path)
    state, _ = read_weights_file(path, str(path))
    try:
        theirs = _strip(state, prefix)
    except ValueError as exc:
        raise WeightsError(f"{path}: {exc}") from None
    unknown = sorted(k for k in theirs if _match(k, _FROM_POINTCEPT) is None)
    ours = {_match(k, _FROM_POINTCEPT): v for k, v in theirs.items() if k not in unknown}
    expected = module.state_dict()
    fresh_decoder = module.config.mode == "encoder-decoder" and not any(k.startswith("decoder.") for k in ours)
    if fresh_decoder:
        expected = {k: v for k, v in expected.items() if not k.startswith("decoder.")}
    problems = weight_problems(expected, ours, _to_theirs)
    if unknown:
        problems.append(f"no pcdag equivalent for {_listing(unknown)}")
    if problems:
        raise WeightsError(
            f"{path} does not fit this PointTransformerV3 ({module.config.mode}): " + "; ".join(problems)
        )
    module.load_state_dict(ours, strict=not fresh_decoder)


def _listing(names: list[str]) -> str:
    return ", ".join(names[:8]) + (f" ... ({len(names)} in all)" if len(names) > 8 else "")


def _to_theirs(text: str) -> str:
    """Name a parameter by its Pointcept name in messages (the file's names), keeping any trailing text."""
    name, _, rest = text.partition(" ")
    return _rename(name, _TO_POINTCEPT, "to_pointcept") + (f" {rest}" if rest else "")


_ENCODER_KEYS = ("enc_depths", "enc_channels", "enc_num_head")
_DECODER = {"dec_depths": "dec_depths", "dec_channels": "dec_channels", "dec_num_head": "dec_heads"}


def params_from_pointcept(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """Node parameters that rebuild the architecture of Pointcept's ``PointTransformerV3`` keyword arguments
    (``config``, as ``export_backbone`` writes them), or None when ``config`` is not of that model. The decoder
    comes from the preset whose decoder matches (an encoder-only file's decoder is never loaded: the first preset
    then); ``WeightsError`` names what node parameters cannot express (another ``mlp_ratio``, a decoder of no
    preset in an encoder-decoder file, patch sizes differing between stages)."""
    if not isinstance(config, Mapping) or not all(k in config for k in _ENCODER_KEYS):
        return None
    encoder_only = bool(config.get("enc_mode", True))
    decoder = {ours: tuple(config[k]) for k, ours in _DECODER.items() if k in config}
    presets = [n for n, p in PRESETS.items() if all(tuple(p[k]) == v for k, v in decoder.items())]
    if not presets and not encoder_only:
        raise WeightsError(
            f"the decoder {decoder} of the file matches no PointTransformerV3 preset ({', '.join(PRESETS)})"
        )
    preset = (presets or list(PRESETS))[0]
    sizes = set(config.get("enc_patch_size", ())) | (set() if encoder_only else set(config.get("dec_patch_size", ())))
    if len(sizes) > 1:
        raise WeightsError(f"patch sizes {sorted(sizes)} differ between stages; PointTransformerV3 sets one for all")
    if float(config.get("mlp_ratio", 4.0)) != float(PTv3Config.preset(preset).mlp_ratio):
        raise WeightsError(
            f"mlp_ratio {config['mlp_ratio']} is not PointTransformerV3's {PTv3Config.preset(preset).mlp_ratio}"
        )
    params: dict[str, Any] = dict(
        preset=preset,
        mode="encoder" if encoder_only else "encoder-decoder",
        in_channels=int(config.get("in_channels", 9)),
        enc_depths=[int(v) for v in config["enc_depths"]],
        enc_channels=[int(v) for v in config["enc_channels"]],
        enc_heads=[int(v) for v in config["enc_num_head"]],
        drop_path=float(config.get("drop_path", 0.3)),
        orders=list(config.get("order", ("z", "z-trans", "hilbert", "hilbert-trans"))),
        shuffle_orders=bool(config.get("shuffle_orders", True)),
        mask_token=bool(config.get("mask_token", False)),
    )
    if sizes:
        params["patch_size"] = int(sizes.pop())
    return params
