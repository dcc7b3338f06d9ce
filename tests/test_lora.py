"""LoRA loading in every released SVI key layout: each must change the DiT's output, scaled by alpha/r."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import save_file

from svi.lora import LoraError, apply_loras, load_loras, normalise_key, read_lora

from .conftest import BUNDLED_DIT, BUNDLED_WIDTH, ROOT

RANK, LAYERS, DIM, FFN = 4, BUNDLED_DIT["num_layers"], BUNDLED_WIDTH, BUNDLED_DIT["ffn_dim"]  # the tiny preset's DiT


@pytest.fixture(scope="module")
def base_transformer():
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel.from_pretrained(ROOT / "assets/models/storyworld-tiny/transformer").eval()


def fabricate(prefix: str, adapter: str = "", alpha: float | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Tensors as the official trainer writes them: blocks.N.{self_attn,cross_attn}.{q,k,v,o}, ffn.{0,2}."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    shapes = {f"{a}.{o}": (DIM, DIM) for a in ("self_attn", "cross_attn") for o in "qkvo"}
    shapes.update({"ffn.0": (FFN, DIM), "ffn.2": (DIM, FFN)})
    for i in range(LAYERS):
        for name, (out_f, in_f) in shapes.items():
            stem = f"{prefix}blocks.{i}.{name}"
            sd[f"{stem}.lora_A{adapter}.weight"] = torch.randn(RANK, in_f, generator=g) * 0.2
            sd[f"{stem}.lora_B{adapter}.weight"] = torch.randn(out_f, RANK, generator=g) * 0.2
            if alpha is not None:
                sd[f"{stem}.alpha"] = torch.tensor(alpha)
    return sd


def dit_output(transformer, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 36, 2, 8, 8, generator=g)
    ctx = torch.randn(1, 8, 64, generator=g)
    img = torch.randn(1, 5, 64, generator=g)
    with torch.no_grad():
        return transformer(x, torch.tensor([500.0]), ctx, img, return_dict=False)[0]


LAYOUTS = {
    "pipe.dit (lightning)": ("pipe.dit.", ".default"),
    "_forward_module.pipe.dit (deepspeed)": ("_forward_module.pipe.dit.", ".default"),
    "diffusion_model.": ("diffusion_model.", ""),
    "model.": ("model.", ""),
    "module.": ("module.", ""),
    "bare PEFT": ("", ""),
    "pipe.dit without .default": ("pipe.dit.", ""),
    "model. with .default": ("model.", ".default"),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_loads_and_changes_the_output(layout, base_transformer, tmp_path):
    prefix, adapter = LAYOUTS[layout]
    sd = fabricate(prefix, adapter)
    sd[f"{prefix}dwpose_embedding.0.weight"] = torch.randn(16, 3, 3, 3, 3)  # non-LoRA tensor, split off
    path = tmp_path / "svi-test.safetensors"
    save_file(sd, path)

    transformer = copy.deepcopy(base_transformer)
    before = dit_output(transformer)
    (lf,) = apply_loras(transformer, [(path, 1.0)])
    after = dit_output(transformer)
    assert lf.pairs == LAYERS * 10
    assert list(lf.extras) == ["dwpose_embedding.0.weight"]
    assert not torch.allclose(before, after, atol=1e-4)
    # the fused weight is W + B @ A (alpha = r when the file records no alpha)
    A = sd[f"{prefix}blocks.1.self_attn.q.lora_A{adapter}.weight"]
    B = sd[f"{prefix}blocks.1.self_attn.q.lora_B{adapter}.weight"]
    w0 = base_transformer.blocks[1].attn1.to_q.weight
    assert torch.allclose(transformer.blocks[1].attn1.to_q.weight, w0 + B @ A, atol=1e-5)


def test_alpha_over_rank_and_user_scale(base_transformer, tmp_path):
    path = tmp_path / "alpha.safetensors"
    sd = fabricate("diffusion_model.", alpha=RANK / 2)  # alpha/r = 0.5
    save_file(sd, path)
    transformer = copy.deepcopy(base_transformer)
    apply_loras(transformer, [(path, 0.5)])  # and a user scale of 0.5: delta x 0.25
    A = sd["diffusion_model.blocks.0.ffn.2.lora_A.weight"]
    B = sd["diffusion_model.blocks.0.ffn.2.lora_B.weight"]
    w0 = base_transformer.blocks[0].ffn.net[2].weight
    assert torch.allclose(transformer.blocks[0].ffn.net[2].weight, w0 + 0.25 * (B @ A), atol=1e-5)


def test_normalise_key():
    assert normalise_key("_forward_module.pipe.dit.blocks.3.ffn.0.lora_B.default.weight") == "blocks.3.ffn.0.lora_B.weight"
    assert normalise_key("module.model.blocks.0.self_attn.q.lora_A.weight") == "blocks.0.self_attn.q.lora_A.weight"


def test_bad_files_are_clear_errors(base_transformer, tmp_path):
    with pytest.raises(LoraError, match="not found"):
        read_lora(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(LoraError, match="readable"):
        read_lora(junk)
    empty = tmp_path / "nolora.safetensors"
    save_file({"dwpose_embedding.0.weight": torch.zeros(1)}, empty)
    with pytest.raises(LoraError, match="no LoRA tensors"):
        read_lora(empty)
    # a LoRA for a bigger model (wrong shapes) must not load silently
    wide = {k: torch.cat([v, v], dim=-1) if "lora_A" in k else v for k, v in fabricate("pipe.dit.").items()}
    save_file(wide, tmp_path / "wide.safetensors")
    with pytest.raises(LoraError):
        apply_loras(copy.deepcopy(base_transformer), [(tmp_path / "wide.safetensors", 1.0)])
    # keys in no known layout are refused instead of loading nothing
    save_file({"foo.lora_A.weight": torch.zeros(2, 2), "foo.lora_B.weight": torch.zeros(2, 2)},
              tmp_path / "odd.safetensors")
    with pytest.raises(LoraError, match="layout"):
        read_lora(tmp_path / "odd.safetensors")


def test_a_step_window_switches_the_lora_by_sigma(base_transformer, tmp_path):
    """A LoRA with a below-sigma window is left unfused: off (the base's output) above the window,
    exactly the fused LoRA's output below it, with an always-on LoRA applied throughout."""
    windowed, always = tmp_path / "windowed.safetensors", tmp_path / "always.safetensors"
    save_file(fabricate("diffusion_model.", seed=1), windowed)
    save_file(fabricate("diffusion_model.", seed=2), always)
    outputs = {}
    for name, loras in {"base": [], "always": [(always, 1.0)], "both": [(windowed, 0.5), (always, 1.0)]}.items():
        t = copy.deepcopy(base_transformer)
        files, steps = load_loras(t, [(p, s, None) for p, s in loras])
        assert steps is None  # no window: fused, nothing to switch
        outputs[name] = dit_output(t)

    t = copy.deepcopy(base_transformer)
    files, steps = load_loras(t, [(windowed, 0.5, 0.8)])
    assert [lf.adapter for lf in files] == [steps.adapters[0][0]]
    steps.at(0.95)  # a high-noise step: the LoRA is off
    torch.testing.assert_close(dit_output(t), outputs["base"], atol=1e-5, rtol=1e-5)
    steps.at(0.5)
    assert not torch.allclose(dit_output(t), outputs["base"], atol=1e-3)

    t = copy.deepcopy(base_transformer)
    _, steps = load_loras(t, [(windowed, 0.5, 0.8), (always, 1.0, None)])
    steps.at(0.95)
    torch.testing.assert_close(dit_output(t), outputs["always"], atol=1e-4, rtol=1e-4)
    steps.at(0.5)
    torch.testing.assert_close(dit_output(t), outputs["both"], atol=1e-4, rtol=1e-4)
    steps.at(0.99)  # and back off at the next clip's first step
    torch.testing.assert_close(dit_output(t), outputs["always"], atol=1e-4, rtol=1e-4)
