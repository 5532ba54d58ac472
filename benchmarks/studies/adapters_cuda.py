"""The adapter code path on a GPU: tiny random LLaMA (DoRA, bf16 base) and BERT (LoRA, cached frozen layers).

    python benchmarks/studies/adapters_cuda.py --out /tmp/adapters_cuda.json

For each: collect one run on ``cuda`` (two checkpoints), evaluate its last checkpoint with the adapter evaluator on
``cuda`` and on the CPU (same weights: the accuracies must agree), and load its PEFT folder with
``PeftModel.from_pretrained`` on the GPU. Then the time of one DoRA training step of a larger random LLaMA
(``--hidden``, ``--layers``) at rank 16, batch 8 x 128 tokens. Writes a JSON report.

A study (docs/development.md, "Studies"): prepared for a GPU, not run yet.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def check(kind: str, tmp: Path) -> dict:
    import torch
    from adapter_models import commonsense_files, tiny_bert, tiny_llama
    from peft import PeftModel

    from rpg.adapters.base import SentenceClassifier, load_base
    from rpg.adapters.collect import collect_adapter_run, peft_dir_name
    from rpg.adapters.evaluate import AdapterEvaluator
    from rpg.adapters.model import release_runners
    from rpg.adapters.spec import AdapterSpec
    from rpg.config import DataConfig
    from rpg.zoo.checkpoint import load_checkpoint
    from rpg.zoo.models import build_model

    if kind == "llama":
        root, words = commonsense_files(tmp / "data", n=24)
        base = tiny_llama(tmp / "llama", words=words)
        data = DataConfig.parse({"name": "commonsense", "root": str(root), "tasks": ["boolq", "piqa"]})
        spec = AdapterSpec(base=str(base), method="dora", rank=4, alpha=8, target_modules=("q_proj", "v_proj"),
                           task="causal_lm", max_length=64, dtype="bfloat16")  # fmt: skip
    else:
        base = tiny_bert(tmp / "bert", layers=3)
        data = DataConfig.parse({"name": "text", "task": "topic", "text_sizes": [16, 8, 8]})
        spec = AdapterSpec(base=str(base), method="lora", rank=4, alpha=8, layers=(1, 2), num_labels=4, max_length=32)
    out = tmp / f"run_{kind}"
    collect = {"epochs": 2, "lr": 0.01, "batch_size": 8, "finetune_lr": 0.001, "finetune_epochs": 1,
               "finetune_batch_size": 8, "checkpoints": 2}  # fmt: skip
    start = time.perf_counter()
    collect_adapter_run(spec=spec, collect=collect, data=data, run=0, table_path=out / "run.csv", device="cuda",
                        out_paths=[out / "ckpt_000.safetensors", out / "ckpt_001.safetensors"])  # fmt: skip
    seconds = time.perf_counter() - start
    state, meta = load_checkpoint(out / "ckpt_001.safetensors")
    scores = {}
    for device in ("cuda", "cpu"):
        release_runners()
        model = build_model(meta["arch"], meta["arch_kwargs"])
        model.load_state_dict(state, strict=True)
        model.to(device)
        scores[device] = AdapterEvaluator(data=data, device=device).evaluate(model, "test").metrics
    base_model = load_base(spec)
    if kind == "bert":
        base_model = SentenceClassifier(base_model.encoder, spec.num_labels)
    peft = PeftModel.from_pretrained(base_model.to("cuda"), str(out / peft_dir_name(1)))
    loaded = {n for n, _ in peft.named_parameters() if "lora_" in n}
    return {"collect_seconds": seconds, "val_accuracy": meta["val_accuracy"], "test": scores,
            "cuda_cpu_agree": abs(scores["cuda"]["accuracy"] - scores["cpu"]["accuracy"]) < 0.05,
            "peft_loaded_tensors": len(loaded), "checkpoint_tensors": len(state),
            "gpu": torch.cuda.get_device_name(0)}  # fmt: skip


def step_time(hidden: int, layers: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    heads = hidden // 128
    cfg = LlamaConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=int(2.6875 * hidden),
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads)  # fmt: skip
    model = LlamaForCausalLM(cfg).to(torch.bfloat16).cuda()
    targets = ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]
    lora = LoraConfig(r=16, lora_alpha=32, use_dora=True, task_type="CAUSAL_LM", target_modules=targets)
    model = get_peft_model(model, lora)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, 32000, (8, 128), device="cuda")
    times = []
    for _ in range(6):
        torch.cuda.synchronize()
        t = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"hidden": hidden, "layers": layers, "adapter_parameters": trainable, "step_seconds": min(times[2:]),
            "max_memory_gb": torch.cuda.max_memory_allocated() / 2**30}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="adapters_cuda.json")
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args()
    report: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("llama", "bert"):
            try:
                report[kind] = check(kind, Path(tmp))
            except Exception as exc:  # report and go on: one failure should not hide the other
                import traceback

                report[kind] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-3000:]}
    try:
        report["dora_step"] = step_time(args.hidden, args.layers)
    except Exception as exc:
        report["dora_step"] = {"error": f"{type(exc).__name__}: {exc}"}
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
