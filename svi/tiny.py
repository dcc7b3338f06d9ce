"""Build the storyworld-tiny model folder: the Wan 2.1 I2V architecture at toy width.

Same classes as the 14B model (WanTransformer3DModel, AutoencoderKLWan, UMT5EncoderModel,
CLIPVisionModel) so every code path is the real one; sizes picked so a clip renders in about a
second on a 2-core CPU. Weights are random (seeded) until storyworld training replaces them; the
folder is written in diffusers layout so it loads exactly like a downloaded Wan folder.

    python -m svi.tiny --out assets/models/storyworld-tiny
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

# Words the storyworld captions use (places, times, colours, shapes, motions, figure, camera) plus
# glue words. Anything else maps to [UNK]; the tokenizer needs no download.
BASE_VOCABULARY = sorted(set("""
a an the of in on at and with to from is are while near under over into out up down left right
red orange yellow green blue purple pink white black gray grey brown
circle square triangle star ring cross diamond heart ball cube box
moves move bounces bounce grows grow shrinks spins spin slides turns rolls floats jumps falls
slowly quickly fast slow big small large tiny
beach forest city desert snow field mountain lake room street park sky sea river night day dusk dawn
morning evening noon sunset sunrise
camera pans pan zooms still static
person figure man woman character stick dances dancing talks talking speaks speaking sings waves walks
walking runs running arms legs head mouth opens closes
scene changes cut to then
as by cyan rests stands
""".split()))

TINY_TRANSFORMER = dict(
    patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32, in_channels=36, out_channels=16,
    text_dim=64, freq_dim=64, ffn_dim=256, num_layers=4, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=64, added_kv_proj_dim=128, rope_max_seq_len=256,
)
TINY_VAE = dict(base_dim=16, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1, attn_scales=[],
                temperal_downsample=[False, True, True], dropout=0.0)
TINY_TEXT = dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, relative_attention_num_buckets=32,
                 dropout_rate=0.0, feed_forward_proj="gated-gelu")
TINY_CLIP = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                 image_size=32, patch_size=8, projection_dim=64)


def build_tokenizer(words: list[str] | None = None):
    """A word-level fast tokenizer over `words`, T5-style ids: <pad>=0, </s>=1, <unk>=2."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in sorted(set(words or BASE_VOCABULARY)):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def build_tiny(seed: int = 0, words: list[str] | None = None) -> dict:
    """Fresh, seeded tiny components keyed by their diffusers subfolder name."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    tokenizer = build_tokenizer(words)
    torch.manual_seed(seed)
    return {
        "transformer": WanTransformer3DModel(**TINY_TRANSFORMER),
        "vae": AutoencoderKLWan(**TINY_VAE),
        "text_encoder": UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **TINY_TEXT)),
        "tokenizer": tokenizer,
        "image_encoder": CLIPVisionModel(CLIPVisionConfig(**TINY_CLIP)),
    }


def save_tiny_adapters(out: Path, seed: int = 0, transformer: dict | None = None, token_px: int = 16) -> None:
    """The talk / dance adapters of the tiny preset: MultiTalk and dwpose classes at the width of
    the DiT whose config is `transformer` (default: TINY_TRANSFORMER), the pose encoder landing on
    tokens of `token_px` pixels (VAE spatial factor x patch)."""
    from dataclasses import asdict

    from .conditioning.audio_adapter import AudioAdapter
    from .conditioning.pose_encoder import PoseEncoder
    from .conditioning.runtime import save_adapter, tiny_audio_config

    t = transformer or TINY_TRANSFORMER
    dim = t["num_attention_heads"] * t["attention_head_dim"]
    torch.manual_seed(seed + 1)
    cfg = tiny_audio_config(dim, t["num_attention_heads"], t["num_layers"])
    save_adapter(AudioAdapter(cfg), asdict(cfg), out / "audio_adapter")
    save_adapter(PoseEncoder(dim=dim, hidden=8, token_px=token_px), {"dim": dim, "hidden": 8, "token_px": token_px},
                 out / "pose_encoder")


def save_tiny(out: Path, seed: int = 0) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, part in build_tiny(seed).items():
        part.save_pretrained(out / name)
    save_tiny_adapters(out, seed)
    (out / "model_index.json").write_text(json.dumps({
        "_class_name": "WanImageToVideoPipeline", "_note": f"storyworld-tiny, random init (seed {seed})",
        "transformer": ["diffusers", "WanTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLWan"],
        "text_encoder": ["transformers", "UMT5EncoderModel"], "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "image_encoder": ["transformers", "CLIPVisionModel"],
    }, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    save_tiny(args.out, args.seed)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
