"""Recipe rules: the values of ``auto`` settings, chosen from the zoo's shape (docs/method.md, "Recipe rules").

Each rule is a small function that returns ``(value, reason)``; the reason names the numbers it used and the zoos the
rule was read off, and goes into the outputs beside the value (the token store's metadata for the token size, the
generator's config.json for the training settings), so that a user sees what ``auto`` chose and why.

The rules only restate what the shipped configurations use (config.yaml's digits zoos, configs/test_timm.yaml) and
what the paper reports for its scales; they are starting points, not tuned optima:

* ``tokens.token_size``: the smallest power of two from 64 to 16,384 that cuts the zoo into at most
  :data:`TOKENS_SMALL` tokens below :data:`SMALL_ZOO` parameters, or at most :data:`TOKENS_LARGE` tokens above
  (16,384 when no power of two does); below :data:`SMALL_ZOO` parameters never more than :data:`TINY_TOKEN_SIZE`,
  the paper's token size for its tiny zoos (the width follows the token size, so a longer token costs a wider
  generator);
* ``train.diffusion_batch``: a quarter of the tokens rounded up to a multiple of 64, between 128 and 1,024;
* ``train.lr``: 3e-3 for a generator up to width 512, the paper's 3e-5 from width 4,096 (1e-5 for a zoo of more than
  50M parameters), log-linear between;
* ``train.warmup_steps``: a sixtieth of the step budget (``max_steps`` under ``steps: auto``), from 20 to 1,000;
* ``generator.dim``: the token size, from 128 to 8,192: the prototype of a token (width D) is projected to the
  token's k entries by one linear map shared by all tokens, so with k > D the prototypes cannot hold a token's
  entries (config.yaml: 64- and 128-long tokens at width 128; test_timm: 256 at 256; the paper: 256 at 256 for
  tiny zoos, 8,192 at 8,192, and 16,384-long tokens at width 8,192 above 50M parameters).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

AUTO = "auto"
TOKEN_SIZES = tuple(2**e for e in range(6, 15))  # 64 .. 16384
SMALL_ZOO = 100_000  # parameters: below, a zoo is "small" (the digits zoos of config.yaml: 11k and 27k)
TOKENS_SMALL = 256  # cnn_m: 183 tokens of 64; the config.yaml ViT: 222 tokens of 128
TINY_TOKEN_SIZE = 256  # the paper's token size for tiny zoos: the cap below SMALL_ZOO parameters
TOKENS_LARGE = 1600  # test_timm: 869 - 1,513 tokens of 256; the paper's ResNet-18 at 8192: about 1,500
DIFFUSION_BATCH_MIN, DIFFUSION_BATCH_MAX = 128, 1024  # config.yaml/test_timm: 128; the paper: 512 - 1024
LR_SMALL, LR_PAPER, LR_PAPER_LARGE = 3e-3, 3e-5, 1e-5
WIDTH_SMALL, WIDTH_PAPER = 512, 4096
LARGE_ZOO = 50_000_000  # the paper lowers the lr above this many parameters
WARMUP_FRACTION, WARMUP_MIN, WARMUP_MAX = 1 / 60, 20, 1000  # config.yaml/test_timm: 50 of 3,000 steps
DIM_MIN, DIM_MAX = 128, 8192  # config.yaml's width; the paper's widest (base, large)


def num_tokens(sizes: Sequence[int], token_size: int) -> int:
    """Tokens of a layout whose generated entries have ``sizes`` elements (a token never crosses an entry)."""
    return sum(math.ceil(int(n) / token_size) for n in sizes)


def token_size(sizes: Sequence[int]) -> tuple[int, str]:
    """``tokens.token_size: auto`` from the element counts of the generated entries."""
    params = sum(int(n) for n in sizes)
    small = params < SMALL_ZOO
    limit = TOKENS_SMALL if small else TOKENS_LARGE
    for k in TOKEN_SIZES:
        if num_tokens(sizes, k) <= limit or (small and k == TINY_TOKEN_SIZE):
            break
    cap = f", at most {TINY_TOKEN_SIZE} (the paper's tiny zoos)" if small else ""
    return k, (
        f"{params:,} parameters in {len(sizes)} generated entries: the smallest power of two giving at most {limit} "
        f"tokens ({'below' if small else 'from'} {SMALL_ZOO:,} parameters){cap} is {k}, {num_tokens(sizes, k)} tokens"
    )


def diffusion_batch(tokens: int) -> tuple[int, str]:
    """``train.diffusion_batch: auto`` from the token count of one model."""
    value = min(DIFFUSION_BATCH_MAX, max(DIFFUSION_BATCH_MIN, 64 * math.ceil(tokens / 4 / 64)))
    return value, (f"{tokens} tokens per model: a quarter, rounded up to a multiple of 64, within "
                   f"[{DIFFUSION_BATCH_MIN}, {DIFFUSION_BATCH_MAX}]")  # fmt: skip


def lr(width: int, parameters: int) -> tuple[float, str]:
    """``train.lr: auto`` from the generator's width and the zoo's parameter count."""
    paper = LR_PAPER_LARGE if parameters > LARGE_ZOO else LR_PAPER
    if width <= WIDTH_SMALL:
        value = LR_SMALL
    elif width >= WIDTH_PAPER:
        value = paper
    else:
        t = math.log(width / WIDTH_SMALL) / math.log(WIDTH_PAPER / WIDTH_SMALL)
        value = float(math.exp((1 - t) * math.log(LR_SMALL) + t * math.log(paper)))
    return value, (f"generator width {width}, {parameters:,} zoo parameters: {LR_SMALL:g} up to width {WIDTH_SMALL}, "
                   f"{paper:g} from width {WIDTH_PAPER}, log-linear between")  # fmt: skip


def warmup_steps(budget: int) -> tuple[int, str]:
    """``train.warmup_steps: auto`` from the step budget (``steps``, or ``max_steps`` under ``steps: auto``)."""
    value = int(min(WARMUP_MAX, max(WARMUP_MIN, round(budget * WARMUP_FRACTION))))
    return value, f"a sixtieth of the {budget}-step budget, within [{WARMUP_MIN}, {WARMUP_MAX}]"


def dim(token_size: int) -> tuple[int, str]:
    """``generator.dim: auto`` from the token size."""
    value = int(min(DIM_MAX, max(DIM_MIN, 4 * math.ceil(token_size / 4))))
    return value, (f"tokens of {token_size}: the width is the token size (one shared linear map projects a width-D "
                   f"prototype to a token), within [{DIM_MIN}, {DIM_MAX}]")  # fmt: skip


def resolve_generator(generator: Any, *, token_size: int) -> tuple[Any, dict[str, dict[str, Any]]]:
    """``generator`` (a GeneratorConfig) with ``dim: auto`` chosen, and {"dim": {value, reason}} when it was; the
    value's own checks (head width, 2D sinusoid) run on the result."""
    if generator.dim != AUTO:
        return generator, {}
    value, reason = dim(token_size)
    return generator.replace(dim=value), {"dim": {"value": value, "reason": reason}}


def resolve_train(train: Any, *, tokens: int, parameters: int, width: int) -> tuple[Any, dict[str, dict[str, Any]]]:
    """``train`` (a TrainConfig) with its ``auto`` recipe values chosen, and {key: {value, reason}} of those."""
    chosen: dict[str, dict[str, Any]] = {}
    rules = {
        "diffusion_batch": lambda: diffusion_batch(tokens),
        "lr": lambda: lr(width, parameters),
        "warmup_steps": lambda: warmup_steps(train.total_steps),
    }
    for key, rule in rules.items():
        if getattr(train, key) == AUTO:
            value, reason = rule()
            chosen[key] = {"value": value, "reason": reason}
    if not chosen:
        return train, chosen
    return train.replace(**{k: v["value"] for k, v in chosen.items()}), chosen
