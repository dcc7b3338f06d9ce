"""Training the bundled storyworld-tiny model on the storyworld generator, stage by stage.

    python -m storyworld.train.vae   --out runs/vae  --steps 3000 [--resume]
    python -m storyworld.train.cache --vae runs/vae/vae --out runs/cache --n 600
    python -m storyworld.train.dit   --out runs/dit  --cache runs/cache --steps 6000 [--resume]
    python -m storyworld.train.svi   --out runs/svi  --cache runs/cache --dit runs/dit/transformer ...
    python -m storyworld.train.bundle --vae ... --dit ... --lora ... --into assets/models/storyworld-tiny

Every stage is seeded (data of step k is a pure function of (seed, k)), checkpoints its full
state (model, optimiser, step) every --every steps, appends one JSON line per step to
losses.jsonl and resumes exactly with --resume. Imports torch and svi (unlike storyworld itself).
"""
