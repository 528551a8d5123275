"""A variant is a class plus a `_target_`: an edge grounding and a context model defined HERE, outside the package,
trained for two steps each through the real training entry (:func:`sgseg.lit.run.run` on the composed
``train`` config) with config overrides alone — no registry, no whitelist, no edit to sgseg."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import MissingConfigException
from torch import Tensor, nn

from sgseg.data.synthetic import generate
from sgseg.lit.build import build_detector
from sgseg.lit.run import run
from sgseg.models.context.base import ContextEncoder, encode_boxes
from sgseg.models.detector.checkpoint import export_detector

from .conftest import REPO
from .test_scene_graph_module import TINY, TINY_OVERRIDES


class PooledUnionEdge(nn.Module):
    """A mask-free f_E: the union-box RoI features average-pooled to D, then one linear layer + ReLU. Takes the
    builder's size keywords and the ``none`` option's head keys (it replaces that option's ``_target_``)."""

    def __init__(
        self,
        in_channels: int,
        num_mask_channels: int,
        num_label_classes: int,
        roi_size: int,
        hidden_dim: int,
        out_dim: int,
        pool_size: int,
        conv_relu: bool,
    ) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.pooled_fc = nn.Linear(in_channels, out_dim)

    def forward(self, union_features: Tensor, mask_probs, boxes, pair_index, label_probs=None) -> Tensor:
        return F.relu(self.pooled_fc(union_features.mean((2, 3))))


class ImageMeanContext(ContextEncoder):
    """A context model in three steps: z^o = ReLU(W [visual, label embedding, position]) plus the mean of its image;
    labels from a linear layer on z^o; the edge context from [visual, z^o, final-label embedding]."""

    def __init__(
        self,
        in_dim: int,
        num_obj_classes: int,
        embed_dim: int,
        hidden_dim: int,
        dropout: float,
        num_source_classes: int = 0,
        class_embeddings: Tensor | None = None,
        start_embedding: Tensor | None = None,
        source_class_embeddings: Tensor | None = None,
    ) -> None:
        super().__init__(in_dim, num_obj_classes, embed_dim, hidden_dim, 128, class_embeddings, None,
                         num_source_classes, source_class_embeddings)  # fmt: skip
        self.mean_obj = nn.Linear(in_dim + embed_dim + 128, hidden_dim)
        self.mean_cls = nn.Linear(hidden_dim, num_obj_classes)
        self.mean_edge = nn.Linear(in_dim + hidden_dim + embed_dim, hidden_dim)

    def encode_objects(self, node_features, boxes, image_index, image_sizes, obj_embed, label_probs):
        pos = self.pos_embed(encode_boxes(boxes, image_index, image_sizes))
        x = F.relu(self.mean_obj(torch.cat([node_features, obj_embed, pos], 1)))
        num_images = int(image_index.max()) + 1 if image_index.numel() else 0
        sums = x.new_zeros(num_images, x.shape[1]).index_add(0, image_index, x)
        counts = torch.bincount(image_index, minlength=num_images).clamp(min=1)[:, None]
        return x + (sums / counts)[image_index], None

    def decode_labels(self, state, object_context, gt_labels):
        logits = self.mean_cls(object_context)
        return logits, logits[:, 1:].argmax(1) + 1

    def encode_edges(self, state, node_features, object_context, obj_labels):
        return self.mean_edge(torch.cat([node_features, object_context, self.obj_embed2(obj_labels)], 1))


TWO_STEPS = [
    "stage=scene_graph", "logger.wandb=null", "num_threads=1", "task=sgcls",
    "model.trainer.max_epochs=-1", "++model.trainer.max_steps=2", "++model.trainer.val_check_interval=2",
    "++model.trainer.check_val_every_n_epoch=null", "++model.trainer.limit_val_batches=1",
    "++model.trainer.limit_test_batches=1", "callbacks.progress_bar.interval_s=0",
]  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny synthetic data and a (random) frozen tiny detector file for stage 2."""
    root = tmp_path_factory.mktemp("variants")
    generate(root / "synthetic", TINY, num_workers=1)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.data_dir={root}", *TINY_OVERRIDES])
        torch.manual_seed(0)
        export_detector(build_detector(cfg, 19, 5), root / "detector.pt")
        yield root
    GlobalHydra.instance().clear()


def _train(root, out, *overrides: str):
    cfg = compose(
        "train",
        overrides=[f"paths.data_dir={root}", f"paths.output_dir={out}", f"detector.checkpoint={root / 'detector.pt'}",
                   *TINY_OVERRIDES, *TWO_STEPS, *overrides],
    )  # fmt: skip
    run(cfg)
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return cfg, last


def test_edge_grounding_defined_in_a_test_trains_by_target_override(setup, tmp_path):
    cfg, last = _train(
        setup,
        tmp_path,
        "model/grounding/edge=none",
        f"model.grounding.edge._target_={__name__}.PooledUnionEdge",
    )
    assert last["global_step"] == 2
    state = last["state_dict"]
    d = cfg.detector.backbone.out_channels
    # built with the builder's sizes (D from the detector) and the option's own out_dim
    assert state["model.edge_grounding.pooled_fc.weight"].shape == (cfg.model.grounding.out_dim, d)
    assert not any(k.startswith("model.edge_grounding.head.") for k in state)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= metrics["sgcls/R@50"] <= 1.0


def test_context_model_defined_in_a_test_trains_by_target_override(setup, tmp_path):
    cfg, last = _train(setup, tmp_path, f"model.context._target_={__name__}.ImageMeanContext")
    assert last["global_step"] == 2
    state = last["state_dict"]
    hidden = cfg.model.context.hidden_dim
    assert state["model.context.mean_cls.weight"].shape == (20, hidden)  # C_obj = 19 + background
    # the relation predictor and the refinement head read the context's width from the built module
    assert state["model.refinement.convs.0.weight"].shape[1] == cfg.detector.backbone.out_channels + hidden
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= metrics["sgcls/R@50"] <= 1.0


def test_unknown_option_is_hydras_own_error(setup):
    with pytest.raises(MissingConfigException, match="transformr"):
        compose("train", overrides=["model/context=transformr"])
