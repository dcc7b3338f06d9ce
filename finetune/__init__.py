"""Error-recycling fine-tuning (SVI_SPEC 3): the trainer, its data and its error banks.

Modules (import them directly; this package import stays cheap and torch-free):
- `finetune.bank`: `ErrorBank` / `ErrorBanks`, the preallocated per-timestep-grid replay memory.
- `finetune.recycling`: `RecyclingConfig` and the pure functions of one training step around the
  DiT forward: error injection, the weighted loss, and error recycling into the banks.
- `finetune.config`: `TrainConfig` (model, data, lora, train, recycling), YAML/JSON files.
- `finetune.data` / `finetune.cache`: dataset layouts, SVI augmentation, the on-disk encoding cache.
- `finetune.lora` / `finetune.model`: peft LoRA on SVI's targets, official export; the trainable module.
- `finetune.train`: the accelerate loop, checkpoints and resume; `finetune.cli`: the command line.

Layer rule (ARCHITECTURE.md section 2): finetune imports svi, never ui or storage.
"""
