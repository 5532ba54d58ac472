"""ELU on a CPU: torch's kernel against the denoiser's exp form (rpg.generator.denoiser.elu_), side by side.

    python benchmarks/elu.py                          # the default config's zoos, 3 interleaved rounds
    python benchmarks/elu.py --rounds 2 --steps 10

torch's CPU ELU computes ``expm1`` of the negative inputs; on AVX-512 builds its vectorised ``expm1`` calls the C
library one element at a time, many times the cost of ``exp``. The denoiser computes ELU as
``max(x, 0) + (exp(min(x, 0)) - 1)`` on a CPU, with torch's ELU backward. Rows, each timed with torch's ELU and with
the exp form in the same round (rounds interleaved, medians, 1 thread):

- ``op``: ELU in place on a [128, 64, 128] float32 tensor (the widest activation of the default ViT's denoiser in a
  training step);
- ``train step``: a generator training step (forward, backward, AdamW) of each zoo's recipe, each form training its
  own copy of the same initial weights on the same batches, over the zoo's token store of a pipeline run of the config
  (``results/<experiment>/tokens/<zoo>``) when there is one, else over random-init checkpoints of its architecture;
- ``validation sampling``: what ``train.validate_every`` samples per validation (``validate_models`` models, DDIM
  with ``validate_steps`` steps) from one untrained snapshot of the generator.

``max |difference|`` is between the two forms: the op's outputs, the two copies' losses at the last step, the sampled
tokens. Prints the table and writes ``benchmarks/results/elu.md``; docs/throughput.md shows it (generated block
bench.elu).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, cpu_name, find_zoo, relative, zoo_token_store

FORMS = ("torch ELU (expm1)", "exp form")


def _torch_elu(x):
    import torch.nn.functional as F

    return F.elu(x, inplace=True)


class Zoo:
    """A zoo's generator recipe over its token store: training steps of one model copy per form (the same initial
    weights and batches), and a validation's sampling from one untrained snapshot."""

    def __init__(self, settings, store) -> None:
        import copy

        import torch

        from rpg.generator.model import build_generator

        self.store = store
        torch.manual_seed(0)
        init = build_generator(settings.generator, store.layout, store.num_states)
        self.models = {form: copy.deepcopy(init) for form in FORMS}
        self.opts = {form: torch.optim.AdamW(m.parameters(), lr=settings.train.lr) for form, m in self.models.items()}
        self.snapshot = copy.deepcopy(init).eval()
        self.tokens = store.tokens(range(len(store))).float()
        self.states = torch.tensor(store.index["state"].tolist())
        self.tcfg = settings.train
        self.gen = torch.Generator()
        self.loss: dict[str, float] = {}

    def step(self, form: str, i: int) -> None:
        import torch

        model, opt = self.models[form], self.opts[form]
        rows = [(i * self.tcfg.batch_size + j) % len(self.tokens) for j in range(self.tcfg.batch_size)]
        self.gen.manual_seed(i)
        loss = model(self.tokens[rows], self.states[rows], None, diffusion_batch=self.tcfg.diffusion_batch,
                     noise_samples=self.tcfg.noise_samples, generator=self.gen)  # fmt: skip
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        self.loss[form] = float(loss)

    def sample(self):
        """The tokens of one validation's models (the trainer's validation sampler and seeds)."""
        from rpg.generator.validation import sample_validation_models

        t = self.tcfg
        return sample_validation_models(self.snapshot, num_models=t.validate_models, sampling_steps=t.validate_steps,
                                        seed=t.validate_seed)  # fmt: skip


def _store(experiment: str, name: str, settings):
    """The zoo's token store of a pipeline run of ``config`` (results/<experiment>/tokens/<zoo>) when there is one,
    else one of random-init checkpoints of its architecture (2 runs x 2). Returns (store, what it is)."""
    from rpg.tokens.store import TokenStore

    run = ROOT / "results" / experiment / "tokens" / name
    if (run / "layout.parquet").is_file():
        return TokenStore(run), f"the pipeline's token store {relative(str(run))}"
    root = Path(tempfile.mkdtemp(prefix=f"rpg_elu_{name}_"))
    return zoo_token_store(settings, root, runs=2, per_run=2, noise=0.01, shard_size=4), "random-init checkpoints"


def measure(args) -> tuple[list[dict], dict]:
    import torch

    import rpg.generator.denoiser as den

    torch.set_num_threads(1)
    forms = {FORMS[0]: _torch_elu, FORMS[1]: den.elu_}
    zoos, info = {}, {}
    for name in args.zoos:
        experiment, settings = find_zoo(args.config, name)
        store, what = _store(experiment, name, settings)
        zoos[name] = Zoo(settings, store)
        info[name] = f"{store.layout.num_tokens} tokens of {store.layout.token_size}, {what}"
    torch.manual_seed(0)
    x = torch.randn(128, 64, 128)
    times: dict = {}
    outputs: dict = {}
    step = 0
    for r in range(args.rounds):
        for form, fn in forms.items():
            den.elu_ = fn  # the denoiser's forward and its frozen form call the module's elu_
            try:
                for _ in range(3):
                    t0 = time.perf_counter()
                    out = fn(x.clone())
                    times.setdefault(("op", "-", form), []).append(time.perf_counter() - t0)
                outputs[("op", "-", form)] = out
                for name, zoo in zoos.items():
                    zoo.step(form, step)  # warm-up
                    t0 = time.perf_counter()
                    for i in range(args.steps):
                        zoo.step(form, step + 1 + i)
                    times.setdefault(("train step", name, form), []).append((time.perf_counter() - t0) / args.steps)
                    outputs[("train step", name, form)] = torch.tensor(zoo.loss[form])
                    t0 = time.perf_counter()
                    outputs[("validation sampling", name, form)] = zoo.sample()
                    times.setdefault(("validation sampling", name, form), []).append(time.perf_counter() - t0)
            finally:
                den.elu_ = forms[FORMS[1]]
            print(f"round {r + 1}: {form} done", file=sys.stderr, flush=True)
        step += args.steps + 1
    rows = []
    for (what, zoo, form), values in times.items():
        if form != FORMS[0]:
            continue
        base, new = statistics.median(values), statistics.median(times[(what, zoo, FORMS[1])])
        a, b = outputs[(what, zoo, FORMS[0])], outputs[(what, zoo, FORMS[1])]
        rows.append({"what": what, "zoo": zoo, "torch_s": base, "exp_s": new, "ratio": new / base,
                     "max_diff": float((a - b).nan_to_num().abs().max())})  # fmt: skip
    return rows, info


def write_table(rows: list[dict], info: dict, args) -> str:
    import torch

    head = ["what", "zoo", f"{FORMS[0]}, ms", f"{FORMS[1]}, ms", "exp form / torch", "max |difference|"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        diff = f"{r['max_diff']:.1e}"
        cells = [r["what"], r["zoo"], f"{1e3 * r['torch_s']:.1f}", f"{1e3 * r['exp_s']:.1f}", f"{r['ratio']:.2f}", diff]
        lines.append("| " + " | ".join(cells) + " |")
    zoos = "; ".join(f"{k}: {v}" for k, v in info.items())
    notes = [
        f"`{relative(args.config)}`, zoos {zoos}; medians of {args.rounds} rounds (train step: {args.steps} steps "
        "after a warm-up step; op: 3 calls), both forms in every round, 1 thread.",
        "max |difference|: op: of the outputs; train step: of the two model copies' losses at the last step (the "
        "same initial weights and batches); validation sampling: of the sampled tokens (one untrained snapshot, the "
        "same seeds).",
        f"Machine: {cpu_name()}, torch {torch.__version__} (CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}), Python {platform.python_version()}.",
        f"`python benchmarks/elu.py --rounds {args.rounds} --steps {args.steps}`",
    ]
    md = "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "elu.md").write_text(md)
    return md


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "config.yaml"))
    p.add_argument("--zoos", nargs="+", default=["cnn_m", "vit"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=20, help="timed training steps per zoo, form and round")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    rows, info = measure(args)
    print(write_table(rows, info, args))


if __name__ == "__main__":
    main()
