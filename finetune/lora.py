"""LoRA on the diffusers Wan DiT via peft, on SVI's targets, and export in the official key layout.

SVI adapts `blocks.N.{self_attn,cross_attn}.{q,k,v,o}` and `blocks.N.ffn.{0,2}` (SVI_SPEC 1.10):
in diffusers names `attn1/attn2.{to_q,to_k,to_v,to_out.0}` and `ffn.net.0.proj`, `ffn.net.2`. The
image keys (k_img / v_img = attn2.add_k_proj / add_v_proj), norms, modulation and embeddings stay
frozen, as in SVI. peft's default init draws A kaiming-uniform and sets B = 0, so the adapted model
starts exactly at the base model.

The exported file uses the Wan-original names under `diffusion_model.` with one `alpha` scalar per
layer (`diffusion_model.blocks.N.self_attn.q.lora_A.weight`, `...lora_B.weight`, `...alpha`),
which `svi.lora.apply_loras` (and diffusers' Wan converter) reads and scales by alpha / r.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

ADAPTER = "svi"
ATTN = {"self_attn": "attn1", "cross_attn": "attn2"}
PROJ = {"q": "to_q", "k": "to_k", "v": "to_v", "o": "to_out.0"}
FFN = {"ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2"}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def diffusers_targets(targets: str) -> list[str]:
    """SVI target names (q, k, v, o, ffn.0, ffn.2, or qualified self_attn.q ...) -> diffusers module
    suffixes inside a block (attn1.to_q, ..., ffn.net.0.proj). Unknown names are an error."""
    out: list[str] = []
    for raw in targets.split(","):
        t = raw.strip()
        if not t:
            continue
        if t in PROJ:
            out += [f"{a}.{PROJ[t]}" for a in ATTN.values()]
        elif t in FFN:
            out.append(FFN[t])
        elif "." in t and t.split(".", 1)[0] in ATTN and t.split(".", 1)[1] in PROJ:
            attn, proj = t.split(".", 1)
            out.append(f"{ATTN[attn]}.{PROJ[proj]}")
        else:
            raise ValueError(f"unknown LoRA target {t!r}; use q, k, v, o, ffn.0, ffn.2 or e.g. self_attn.q, "
                             f"cross_attn.o")
    return list(dict.fromkeys(out))


def target_regex(targets: str) -> str:
    """A peft `target_modules` regex (full match on module names) for the DiT blocks only."""
    alts = "|".join(re.escape(t) for t in diffusers_targets(targets))
    return rf"blocks\.\d+\.({alts})"


def add_lora(transformer: torch.nn.Module, rank: int, alpha: float, targets: str) -> int:
    """Add a trainable LoRA adapter (B = 0) to `transformer`; returns how many Linears it adapts.

    Only the adapter trains: every base parameter stays frozen. LoRA weights are kept in fp32 even
    over a bf16 base (peft's autocast_adapter_dtype), as SVI upcasts them."""
    from peft import LoraConfig

    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=target_regex(targets), lora_dropout=0.0,
                     bias="none", init_lora_weights=True)
    transformer.requires_grad_(False)
    transformer.add_adapter(cfg, adapter_name=ADAPTER)
    layers = [m for m in transformer.modules() if hasattr(m, "lora_A") and ADAPTER in getattr(m, "lora_A", {})]
    if not layers:
        raise ValueError(f"LoRA targets {targets!r} matched no layer of the DiT")
    for m in layers:
        for p in (*m.lora_A[ADAPTER].parameters(), *m.lora_B[ADAPTER].parameters()):
            p.data = p.data.float()
            p.requires_grad_(True)
    return len(layers)


def lora_state_dict(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """diffusers-named LoRA tensors without the adapter token: `blocks.0.attn1.to_q.lora_A.weight`."""
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(transformer, adapter_name=ADAPTER)


_DIFF_KEY = re.compile(r"^blocks\.(\d+)\.(attn1|attn2|ffn)\.(to_q|to_k|to_v|to_out\.0|net\.0\.proj|net\.2)"
                       r"\.(lora_A|lora_B)\.weight$")
_INV_ATTN = {v: k for k, v in ATTN.items()}
_INV_PROJ = {v: k for k, v in PROJ.items()}
_INV_FFN = {"net.0.proj": "ffn.0", "net.2": "ffn.2"}


def official_name(diffusers_key: str) -> tuple[str, str]:
    """`blocks.3.attn2.to_out.0.lora_B.weight` -> (`blocks.3.cross_attn.o`, `lora_B`)."""
    m = _DIFF_KEY.match(diffusers_key)
    if m is None:
        raise ValueError(f"not a LoRA key of an SVI target: {diffusers_key}")
    block, parent, leaf, which = m.groups()
    module = _INV_FFN[leaf] if parent == "ffn" else f"{_INV_ATTN[parent]}.{_INV_PROJ[leaf]}"
    return f"blocks.{block}.{module}", which


def official_state_dict(lora: dict[str, torch.Tensor], alpha: float,
                        dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Official layout: `diffusion_model.blocks.N.self_attn.q.lora_{A,B}.weight` and `....alpha`."""
    out: dict[str, torch.Tensor] = {}
    for key, value in lora.items():
        stem, which = official_name(key)
        out[f"diffusion_model.{stem}.{which}.weight"] = value.detach().to("cpu", dtype).contiguous()
        out[f"diffusion_model.{stem}.alpha"] = torch.tensor(float(alpha), dtype=torch.float32)
    return out


def lora_from_module_state(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """diffusers-named LoRA tensors from a (wrapped) module's named parameters or state dict:
    `transformer.blocks.0.attn1.to_q.lora_A.svi.weight` -> `blocks.0.attn1.to_q.lora_A.weight`."""
    out = {}
    for key, value in state.items():
        if not key.startswith(prefix) or f".{ADAPTER}." not in key:
            continue
        name = key[len(prefix):].replace(f".{ADAPTER}.", ".")
        if _DIFF_KEY.match(name):
            out[name] = value
    return out


def export_lora(lora: dict[str, torch.Tensor], path: str | os.PathLike, *, alpha: float, rank: int,
                dtype: str = "float32", extras: dict[str, torch.Tensor] | None = None,
                metadata: dict[str, str] | None = None) -> Path:
    """Write diffusers-named LoRA tensors (`lora_state_dict`, `lora_from_module_state`) in the
    official layout, plus `extras` (e.g. `dwpose_embedding.*`), as one safetensors file, atomically."""
    from safetensors.torch import save_file

    if dtype not in _DTYPES:
        raise ValueError(f"export dtype must be one of {list(_DTYPES)}, got {dtype!r}")
    if not lora:
        raise ValueError("no LoRA tensors to export")
    sd = official_state_dict(lora, alpha, _DTYPES[dtype])
    for k, v in (extras or {}).items():
        sd[k] = v.detach().to("cpu", _DTYPES[dtype]).contiguous()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": "svi-lora", "rank": str(rank), "alpha": str(alpha), **(metadata or {})}
    tmp = path.with_name(path.name + ".tmp")
    save_file(sd, str(tmp), metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})
    os.replace(tmp, path)
    return path
