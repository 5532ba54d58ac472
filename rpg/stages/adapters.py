"""Adapter zoos' own stage: generated adapters as PEFT folders (``PeftModel.from_pretrained(base, folder)``)."""

from __future__ import annotations

from pathlib import Path

from rpg.adapters.peft_io import write_peft_dir
from rpg.adapters.spec import AdapterSpec
from rpg.io import atomic_dir
from rpg.runtime import progress
from rpg.stages.generate import batch_models
from rpg.zoo.checkpoint import load_checkpoint


def export_peft(*, batch_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Write every generated model of ``batch_dir`` as ``out_dir/model_<iii>/`` (adapter_model.safetensors and
    adapter_config.json); ``out_dir`` appears whole or not at all. Returns the PEFT folders."""
    models = batch_models([batch_dir])
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        for path in progress(models, desc="export PEFT", total=len(models)):
            state, meta = load_checkpoint(path)
            spec = AdapterSpec.from_kwargs(meta.get("arch_kwargs") or {}, where=path)
            write_peft_dir(state, spec, tmp / path.stem)
    return [out_dir / p.stem for p in models]
