"""Assemble a complete storyworld-tiny model folder from the stages' exports.

Copies BASE (default: the bundled folder) to --into unless they are the same, then replaces vae/
with the VAE stage's export, transformer/ with the DiT stage's EMA export and (optionally)
svi-lora.safetensors with the SVI stage's LoRA (svi-talk / svi-dance.safetensors with the talk and
dance runs' LoRAs, which carry their trained audio adapter / pose encoder); the text encoder,
tokenizer, CLIP image encoder and the adapters' seeded init are kept. model_index.json records
where each part came from.

    python -m storyworld.train.bundle --vae out/storyworld-train/vae/vae \
        --dit out/storyworld-train/dit/transformer --into assets/models/storyworld-tiny
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from svi.models import token_px as configs_token_px

from .cache import ASSETS
from .evaluate import SVI_LORA

TALK_LORA, DANCE_LORA = "svi-talk.safetensors", "svi-dance.safetensors"  # the storyworld-tiny talk / dance variants


def _replace_dir(src: Path, dst: Path) -> None:
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        if not (src / name).is_file():
            raise FileNotFoundError(f"{src / name} is missing (has the stage exported yet?)")
    tmp = dst.with_name(dst.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    cfg = json.loads((dst / "config.json").read_text())
    if cfg.pop("_name_or_path", None) is not None:  # a machine-local path has no place in a shipped folder
        (dst / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def token_px(folder: Path) -> int:
    """Pixels per DiT token of a model folder (svi.models.token_px over its configs)."""
    vae = json.loads((folder / "vae" / "config.json").read_text())
    dit = json.loads((folder / "transformer" / "config.json").read_text())
    return configs_token_px(vae, dit)


def _match_adapters(into: Path) -> None:
    """Re-seed the adapters' init (audio_adapter/, pose_encoder/) when the DiT's width or token grid
    changed: a talk / dance fine-tune starts from them, their blocks must fit the DiT they attach
    to, and the pose features must land on its tokens."""
    from svi.tiny import save_tiny_adapters

    dit = json.loads((into / "transformer" / "config.json").read_text())
    width, px = dit["num_attention_heads"] * dit["attention_head_dim"], token_px(into)
    adapter, pose = into / "audio_adapter" / "config.json", into / "pose_encoder" / "config.json"
    if (adapter.is_file() and json.loads(adapter.read_text()).get("dim") == width
            and pose.is_file() and json.loads(pose.read_text()).get("token_px", 16) == px):
        return
    save_tiny_adapters(into, 0, dit, token_px=px)
    # LoRAs (and the adapters they carry) of a DiT of another width or token grid do not fit this one
    stale = [p for p in (into / n for n in (SVI_LORA, TALK_LORA, DANCE_LORA)) if p.is_file()]
    for p in stale:
        p.unlink()
    print(f"bundle: adapters re-seeded for the DiT (width {width}, {px} px tokens)"
          + (f"; removed LoRAs of the old DiT: {', '.join(p.name for p in stale)}" if stale else ""))


def bundle(into: Path, *, base: Path = ASSETS, vae: Path | None = None, dit: Path | None = None,
           lora: Path | None = None, talk: Path | None = None, dance: Path | None = None,
           note: str | None = None) -> Path:
    into = Path(into)
    if into.resolve() != Path(base).resolve():
        shutil.rmtree(into, ignore_errors=True)
        shutil.copytree(base, into)
    if vae is not None:
        _replace_dir(Path(vae), into / "vae")
    if dit is not None:
        _replace_dir(Path(dit), into / "transformer")
    if vae is not None or dit is not None:
        _match_adapters(into)
    for src, name in ((lora, SVI_LORA), (talk, TALK_LORA), (dance, DANCE_LORA)):
        if src is not None:
            shutil.copyfile(src, into / name)
    index = json.loads((into / "model_index.json").read_text())
    if note:
        index["_note"] = note
    (into / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return into


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--into", type=Path, required=True)
    ap.add_argument("--base", type=Path, default=ASSETS)
    ap.add_argument("--vae", type=Path)
    ap.add_argument("--dit", type=Path)
    ap.add_argument("--lora", type=Path, help="the SVI (shot/film) LoRA")
    ap.add_argument("--talk", type=Path, help="the talk run's lora.safetensors (LoRA + audio adapter)")
    ap.add_argument("--dance", type=Path, help="the dance run's lora.safetensors (LoRA + pose encoder)")
    ap.add_argument("--note", default=None)
    args = ap.parse_args(argv)
    print(bundle(args.into, base=args.base, vae=args.vae, dit=args.dit, lora=args.lora, talk=args.talk,
                 dance=args.dance, note=args.note))


if __name__ == "__main__":
    main()
