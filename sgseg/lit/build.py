"""Config → objects: the one place that reads Hydra configs and builds datasets, models and modules.

Where this sits: called by :mod:`sgseg.lit.run` (and the tests that check every experiment builds). The
constructors below it take modules, tensors and numbers only; this module resolves a config into those.
Class lists come from the dataset files (never from YAML), word vectors and statistics are computed by
functions and passed in.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import asdict, dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from sgseg.data.statistics import cooccurrence_prior, frequency_statistics, zeroshot_triplets
from sgseg.lit.datamodule import SceneGraphDataModule
from sgseg.lit.scene_graph_module import SceneGraphModule
from sgseg.models.context.word_vectors import label_word_vectors, start_word_vector
from sgseg.models.detector import JointDetector
from sgseg.models.detector.backbones import build_backbone
from sgseg.models.detector.checkpoint import detector_from_coco_maskrcnn, load_detector
from sgseg.models.masks import DEFAULT_ALIASES, MaskTransfer, build_similarity, shuffled_sources
from sgseg.models.masks.similarity import _needed_words, load_word_vectors
from sgseg.models.relation import FrequencyBias, RelationPredictor
from sgseg.models.scene_graph import SceneGraphModel

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config value that cannot work (missing file, unknown variant); the message says what to set."""


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


# ---------------------------------------------------------------------------------------------- data
def prepare_data(cfg: DictConfig) -> None:
    """Generate the synthetic benchmark when the data config asks for it (cached; regenerated when stale)."""
    gen = cfg.data.get("generate")
    if gen is None:
        return
    from sgseg.data.synthetic import SyntheticConfig, ensure_synthetic

    ensure_synthetic(
        cfg.data.root, SyntheticConfig(**_plain(gen)), num_workers=int(cfg.data.get("gen_workers", 2))
    )


def check_data_paths(cfg: DictConfig) -> None:
    """One clear error for a missing dataset folder, naming the key and what to put there."""
    checks = [
        (
            "data.vg.root",
            cfg.data.vg.root,
            "VG150 (VG-SGG-with-attri.h5, dicts json, image_data.json, VG_100K/)",
        )
    ]
    if cfg.data.get("coco") is not None:
        checks.append(
            ("data.coco.root", cfg.data.coco.root, "COCO 2017 (annotations/, train2017/, val2017/)")
        )
    for key, path, what in checks:
        if not Path(path).is_dir():
            raise ConfigError(
                f"{key}={path} does not exist: download {what} and point paths.data_dir (SGSEG_DATA) or {key} "
                "at it, or run on the synthetic benchmark (data=synthetic)."
            )


def build_datamodule(
    cfg: DictConfig, with_coco: bool = True, with_true_masks: bool = False
) -> SceneGraphDataModule:
    """The VG (+ COCO, unless ``with_coco`` is false or ``data.coco`` is null) DataModule.

    with_true_masks: the VG items also carry their objects' true masks (``data.true_masks``; the oracle mask
    source of stage 2, ``model.mask_source=oracle``)."""
    extra = {}
    if with_true_masks:
        if not cfg.data.get("true_masks"):
            raise ConfigError(
                f"model.mask_source=oracle needs the objects' true masks, but data.true_masks is not set for "
                f"data={cfg.data.get('name')}: only the synthetic benchmark has them (data=synthetic), or use "
                "model.mask_source=transfer|shuffled"
            )
        extra["true_masks"] = str(cfg.data.true_masks)
    vg = hydra.utils.instantiate(cfg.data.vg, **extra)
    coco = None
    if with_coco and cfg.data.get("coco") is not None:
        coco = hydra.utils.instantiate(cfg.data.coco)
    loader = _plain(cfg.data.loader)
    return SceneGraphDataModule(
        vg=vg, coco=coco, seed=int(cfg.seed), prepare=partial(prepare_data, cfg), **loader
    )


def coco_class_names(cfg: DictConfig, dm: SceneGraphDataModule) -> list[str]:
    """The COCO (source) class names: from the DataModule's COCO stream, else the COCO val json, else
    ``data.coco_classes``."""
    if dm.coco_factory is not None:
        return list(dm.dataset("coco", "train").class_names)
    if cfg.data.get("coco") is not None:
        return list(hydra.utils.instantiate(cfg.data.coco)(split="val").class_names)
    names = cfg.data.get("coco_classes")
    if names is None:
        from sgseg.data.label_spaces import COCO_OBJECT_CLASSES

        return list(COCO_OBJECT_CLASSES)
    return list(names)


def coco_class_count(cfg: DictConfig, dm: SceneGraphDataModule) -> int:
    """How many COCO classes the detector's COCO heads have: ``data.num_coco_classes`` when set (a VG-only run
    without COCO files), else the number of COCO class names."""
    n = cfg.data.get("num_coco_classes")
    return int(n) if n is not None else len(coco_class_names(cfg, dm))


# ---------------------------------------------------------------------------------------------- stage 1
def build_detector(cfg: DictConfig, num_vg_classes: int, num_coco_classes: int) -> JointDetector:
    """The stage-1 detector: from ``detector.init`` (a COCO Mask R-CNN file) when set, else the backbone's
    ``pretrained`` weights and fresh heads."""
    det = cfg.detector
    if det.get("backend", "torchvision") == "mmdet":
        return build_mmdet_detector_from_config(cfg, num_vg_classes, num_coco_classes)
    if OmegaConf.is_missing(det, "init"):
        raise ConfigError(
            "detector.init is required: the COCO Mask R-CNN this detector starts from (detectron2 "
            "model_final_2d9806.pkl for ResNeXt-101-FPN, see README 'Detector initialisation'), or "
            "detector.init=null for the ImageNet backbone"
        )
    if det.get("init"):
        if not Path(det.init).is_file():
            raise ConfigError(
                f"detector.init={det.init} not found: download the COCO Mask R-CNN (README, 'Detector "
                "initialisation') or set detector.init=null to start the backbone from ImageNet"
            )
        try:
            return detector_from_coco_maskrcnn(
                str(det.init), _plain(det.backbone), num_vg_classes, num_coco_classes, **_plain(det.net)
            )
        except (KeyError, ValueError, pickle.UnpicklingError) as err:
            raise ConfigError(f"detector.init={det.init}: {err}") from err
    backbone = build_backbone(**_plain(det.backbone))
    return JointDetector(backbone, num_vg_classes, num_coco_classes, **_plain(det.net))


def build_mmdet_detector_from_config(
    cfg: DictConfig, num_vg_classes: int, num_coco_classes: int
) -> JointDetector:
    """``detector=mmdet_mask_rcnn``: the MMDetection backend from ``detector.model_config`` (+ ``cfg_options``),
    with an mmdet COCO Mask R-CNN checkpoint from ``detector.init`` when set."""
    det = cfg.detector
    try:
        from sgseg.models.detector import mmdet_backend
    except ImportError as err:
        raise ConfigError(str(err)) from err
    if det.get("init") and not Path(det.init).is_file():
        raise ConfigError(
            f"detector.init={det.init} not found: pass an mmdet COCO Mask R-CNN .pth or set it null"
        )
    try:
        model_cfg = mmdet_backend.load_model_config(str(det.model_config), _plain(det.get("cfg_options")))
    except FileNotFoundError as err:
        raise ConfigError(str(err)) from err
    detector = mmdet_backend.MMDetJointDetector(model_cfg, num_vg_classes, num_coco_classes)
    if det.get("init"):
        try:
            mmdet_backend.load_mmdet_maskrcnn(detector, mmdet_backend.read_mmdet_checkpoint(det.init))
        except (KeyError, ValueError, pickle.UnpicklingError) as err:
            raise ConfigError(f"detector.init={det.init}: {err}") from err
    return detector


# ---------------------------------------------------------------------------------------------- stage 2
@dataclass
class StageTwoInputs:
    """What stage 2 derives from the data: label spaces, statistics, similarity, zero-shot triplets."""

    object_classes: list[str]
    predicates: list[str]
    coco_classes: list[str]
    similarity: Tensor
    fg_matrix: Tensor
    bg_matrix: Tensor
    zeroshot: Tensor
    label_vectors: dict[str, Tensor] | None = None  # context label tables (:func:`context_label_vectors`)


def stage_two_inputs(cfg: DictConfig, dm: SceneGraphDataModule) -> StageTwoInputs:
    vg_train = dm.dataset("vg", "train")
    vg_test = dm.dataset("vg", "test")
    coco_classes = coco_class_names(cfg, dm)
    targets = list(vg_train.object_classes)
    aliases = (
        DEFAULT_ALIASES if cfg.data.get("aliases", "default") == "default" else dict(cfg.data.aliases or {})
    )
    vectors_path = Path(cfg.data.vectors)
    if not vectors_path.is_file():
        raise ConfigError(
            f"data.vectors={vectors_path} not found: download GloVe (e.g. glove.840B.300d.txt) and set data.vectors"
        )
    vectors = load_word_vectors(vectors_path, _needed_words(targets + coco_classes))
    t = cfg.model.transfer
    similarity = build_similarity(
        targets, coco_classes, vectors, aliases, float(t.threshold), float(t.temperature)
    )
    stats = frequency_statistics(vg_train)
    label_vectors = context_label_vectors(cfg, targets, coco_classes)
    return StageTwoInputs(
        object_classes=targets,
        predicates=list(vg_train.predicates),
        coco_classes=coco_classes,
        similarity=similarity,
        fg_matrix=stats.fg_matrix,
        bg_matrix=stats.bg_matrix,
        zeroshot=zeroshot_triplets(vg_train, vg_test),
        label_vectors=label_vectors,
    )


def context_label_vectors(
    cfg: DictConfig, object_classes: list[str], coco_classes: list[str]
) -> dict[str, Tensor] | None:
    """GloVe initialisation of the context encoders' label tables (``model.label_vectors``, a GloVe-format
    file; null = random init): ``class_embeddings`` Float[C_obj, E], ``start_embedding`` Float[E],
    ``source_class_embeddings`` Float[C_coco + 1, E]. The vectors' width must equal ``model.context.embed_dim``
    (the reference and SGB use GloVe 6B 200-d with embed_dim 200; no projection, so the tables start exactly at
    the word vectors)."""
    path = cfg.model.get("label_vectors")
    if path is None:
        return None
    if not Path(path).is_file():
        raise ConfigError(
            f"model.label_vectors={path} not found: download GloVe (the paper's baselines use glove.6B.200d.txt) "
            "and set data.label_vectors / model.label_vectors, or set model.label_vectors=null for random init"
        )
    vectors = load_word_vectors(path, _needed_words(object_classes + coco_classes) + ["start"])
    classes = label_word_vectors(object_classes, vectors)
    embed_dim = int(cfg.model.context.embed_dim)
    if classes.shape[1] != embed_dim:
        raise ConfigError(
            f"model.label_vectors={path} holds {classes.shape[1]}-d vectors but model.context.embed_dim={embed_dim}; "
            "set model.context.embed_dim to the vectors' width (or pick a vector file of that width)"
        )
    return {
        "class_embeddings": classes,
        "start_embedding": start_word_vector(vectors, embed_dim),
        "source_class_embeddings": label_word_vectors(coco_classes, vectors),
    }


def build_stage2(cfg: DictConfig, detector: JointDetector, inputs: StageTwoInputs) -> SceneGraphModel:
    """The stage-2 model of ``cfg.model`` on a (frozen) ``detector`` — the one builder behind training, evaluation,
    prediction and the benchmark scripts.

    Each part is its config group's ``_target_`` node (``model.context``, ``model.grounding.node``,
    ``model.grounding.edge``, ``model.refine``; a ``_partial_`` whose sizes are added here), so a variant is a
    class plus a config file, and an unknown option is Hydra's own error. Widths are read from the built
    modules, never from the config: D and D_box and the mask side M from the detector (node/edge RoI side = M,
    refinement RoI side = M / 2), the context's input from the node grounding, the predictor's from the context
    and the edge grounding. The parts are built in a fixed order (node, edge, context, predictor, refinement):
    with a seed, the same config gives the same initial weights.
    """
    m = cfg.model
    num_vg = len(inputs.object_classes)
    c_obj, c_rel = num_vg + 1, len(inputs.predicates) + 1
    d, side = detector.backbone.out_channels, detector.mask_side
    node = hydra.utils.instantiate(m.grounding.node)(
        in_channels=d, num_mask_channels=num_vg, box_feature_dim=detector.box_feature_dim, roi_size=side
    )
    edge = hydra.utils.instantiate(m.grounding.edge)(
        in_channels=d, num_mask_channels=num_vg, num_label_classes=c_obj, roi_size=side
    )
    # tensors go to the partial's call, not through Hydra's config merging
    extra: dict[str, Any] = dict(inputs.label_vectors or {})
    if m.get("tree_prior"):
        extra["pair_prior"] = cooccurrence_prior(inputs.fg_matrix)
    context = hydra.utils.instantiate(m.context)(
        in_dim=node.out_dim, num_obj_classes=c_obj, num_source_classes=detector.num_coco_classes + 1, **extra
    )
    freq = FrequencyBias.from_statistics(inputs.fg_matrix, inputs.bg_matrix) if m.freq_bias else None
    predictor = RelationPredictor(
        edge_dim=context.hidden_dim,
        union_dim=edge.out_dim,
        pooling_dim=int(m.predictor.pooling_dim),
        num_obj_classes=c_obj,
        num_predicates=c_rel,
        freq_bias=freq,
        project_relu=bool(m.predictor.get("project_relu", False)),
    )
    refinement = None
    if m.get("refine") is not None:
        refinement = hydra.utils.instantiate(m.refine)(
            in_channels=d, context_dim=context.hidden_dim, num_classes=detector.num_coco_classes,
            roi_size=side // 2,
        )  # fmt: skip
    source = str(m.get("mask_source", "transfer"))
    similarity = inputs.similarity
    if source == "shuffled":  # the lower bound: a fixed derangement of the COCO sources per seed
        similarity = shuffled_sources(similarity, int(cfg.get("seed", 0)))
    elif source == "oracle" and cfg.task.name == "sgdet":
        raise ConfigError(
            "model.mask_source=oracle needs the GT boxes (the true masks are those of GT objects): "
            "task=predcls or task=sgcls; SGDet is not supported"
        )
    elif source not in ("transfer", "oracle", "empty"):
        raise ConfigError(f"model.mask_source={source!r}: choose transfer | oracle | shuffled | empty")
    blur = m.get("oracle_blur") or 0.0
    if not isinstance(blur, (int, float)) or blur < 0 or (blur > 0 and source != "oracle"):
        raise ConfigError(
            f"model.oracle_blur={blur!r}: the σ (>= 0, cells of the mask grid) of the blur of the true masks, "
            f"only with model.mask_source=oracle (here {source}); set model.oracle_blur=0 otherwise"
        )
    return SceneGraphModel(
        detector=detector,
        transfer=MaskTransfer(similarity),
        mask_source="transfer" if source == "shuffled" else source,
        oracle_blur=float(blur),
        node_grounding=node,
        edge_grounding=edge,
        context=context,
        predictor=predictor,
        refinement=refinement,
        roi_size=side,
        refine_passes=int(m.get("refine_passes", 1)),
        train_refine_passes=m.get("train_refine_passes"),
        kernel_labels=str(m.get("kernel_labels", "detector")),
        pair_chunk_size=m.get("pair_chunk_size", "auto"),
        sgdet_nms_threshold=m.get("sgdet_nms_threshold", 0.3),
        detections_per_image=m.get("detections_per_image"),
        **_plain(m.sampling),
    )


def build_scene_graph_module(
    cfg: DictConfig, dm: SceneGraphDataModule, detector: JointDetector
) -> tuple[SceneGraphModule, StageTwoInputs]:
    """The stage-2 LightningModule of ``cfg`` on ``detector``, with what it was built from: the model
    (:func:`build_stage2`) from the DataModule's label spaces and statistics, the evaluation inputs (zero-shot
    triplets, names, the COCO val set for mask AP when the DataModule has one) and ``model.optim``. Training,
    ``python -m sgseg.evaluate`` and the stage-2 benchmark scripts all build it here."""
    inputs = stage_two_inputs(cfg, dm)
    model = build_stage2(cfg, detector, inputs)
    coco_val = dm.dataset("coco", "val") if dm.coco_factory is not None else None
    module = SceneGraphModule(
        model,
        mode=str(cfg.task.name),
        num_object_classes=len(inputs.object_classes) + 1,
        num_predicates=len(inputs.predicates) + 1,
        zeroshot_triplets=inputs.zeroshot,
        predicate_names=inputs.predicates,
        object_names=inputs.object_classes,
        coco_val_gt=coco_val.coco if coco_val is not None else None,
        coco_label_to_category=coco_val.label_to_category if coco_val is not None else None,
        stage_two_inputs=asdict(inputs),
        **OmegaConf.to_container(cfg.model.optim, resolve=True),
    )
    return module, inputs


def load_frozen_detector(path: str | Path) -> JointDetector:
    if path is None:
        raise ConfigError(
            "detector.checkpoint is not set: train stage 1 first (stage=detector) and pass the detector.pt it "
            "writes, or run stage=pipeline"
        )
    if not Path(path).is_file():
        raise ConfigError(
            f"detector.checkpoint={path} not found: pass the detector.pt (or .ckpt) of a stage-1 run"
        )
    return load_detector(path, map_location="cpu")


@cache
def cpu_autocast_lstm_works() -> bool:
    """Whether ``nn.LSTM`` runs under CPU bf16 autocast on this machine. PyTorch's oneDNN LSTM primitive fails
    there on CPUs without AVX-512 ("could not create a primitive descriptor for the LSTM forward propagation
    primitive"; seen on an AMD EPYC); with bf16 *inputs* and no autocast it runs."""
    lstm = torch.nn.LSTM(4, 4)
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.zeros(2, 1, 4))
    except RuntimeError:
        return False
    return True


def check_cpu_precision(trainer: pl.Trainer, module: torch.nn.Module) -> None:
    """A clear error instead of oneDNN's crash mid-validation: bf16 autocast (``trainer.precision=bf16-mixed``)
    on a CPU whose LSTM primitive cannot run under it, for a model with ``nn.LSTM`` layers (MOTIF, VCTree's
    label decoder)."""
    on_cpu = trainer.strategy.root_device.type == "cpu"
    if not (on_cpu and "bf16" in str(trainer.precision)):
        return
    if any(isinstance(m, torch.nn.LSTM) for m in module.modules()) and not cpu_autocast_lstm_works():
        raise ConfigError(
            f"trainer.precision={trainer.precision} on this CPU: PyTorch's oneDNN LSTM fails under bf16 autocast "
            "here (no AVX-512), and this model has LSTM layers; use trainer.precision=32 (cpu_bf16_convs=true "
            "runs the grounding heads' convolutions in bf16 without autocasting the LSTMs)"
        )


def configure_torch(cfg: DictConfig) -> None:
    """CPU threads (``num_threads``), and flush denormal floats to zero: the frozen detector's features
    and fresh LSTM/conv activations produce denormals that made CPU steps 10-20x slower (measured 12 s
    vs 0.7 s per synthetic stage-2 step). ``cpu_fast_kernels`` (default true) picks the CPU RoIAlign
    (:mod:`sgseg.ops.roi_align`: matrix products vs torchvision's kernel), the grounding heads' conv
    layout (:mod:`sgseg.models.grounding.concat_conv`: channels-last vs NCHW) and the MOTIF decoder's input
    projection (:mod:`sgseg.models.context.motif`: all steps' rows at once vs step by step) — the same
    arithmetic up to float rounding; false is the route of earlier rounds (README "Results": what the switch changes).
    ``cpu_bf16_convs`` (default false) runs the grounding and refinement heads' convolutions in bf16 on CPU
    (:func:`sgseg.models.grounding.concat_conv.cpu_bf16_convs`): 3–5× faster convs with AMX, bf16 rounding."""
    import sgseg.models.context.motif as motif
    import sgseg.models.grounding.concat_conv as concat_conv
    import sgseg.ops.roi_align as roi_align

    n = cfg.get("num_threads")
    if n:
        torch.set_num_threads(int(n))
    torch.set_flush_denormal(True)
    fast = cfg.get("cpu_fast_kernels", True)
    if not isinstance(fast, bool):
        raise ConfigError(f"cpu_fast_kernels={fast!r}: must be true or false")
    roi_align.SEPARABLE = concat_conv.CHANNELS_LAST = motif.DECODER_INPUT_ONCE = fast
    bf16 = cfg.get("cpu_bf16_convs", False)
    if not isinstance(bf16, bool):
        raise ConfigError(f"cpu_bf16_convs={bf16!r}: must be true or false")
    concat_conv.BF16_CONVS = bf16
    if bf16 and not concat_conv.cpu_has_fast_bf16():
        log.warning(
            "cpu_bf16_convs=true on a CPU without AMX: oneDNN's bf16 convolutions are slower than float32 here "
            "(they pay on Sapphire Rapids and later); set cpu_bf16_convs=false"
        )
