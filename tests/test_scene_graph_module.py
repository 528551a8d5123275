"""Stage 2 end to end on a tiny synthetic benchmark: the composed model, its LightningModule, the runners."""

from __future__ import annotations

import json

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir

from sgseg.data.statistics import cooccurrence_prior
from sgseg.data.synthetic import SyntheticConfig, generate
from sgseg.evaluation.scene_graph import recall_from_per_image
from sgseg.lit.build import build_datamodule, build_detector, build_stage2, stage_two_inputs
from sgseg.lit.run import results_table
from sgseg.lit.scene_graph_module import SceneGraphModule
from sgseg.models.masks.refine import refinement_loss
from sgseg.models.masks.similarity import load_word_vectors
from sgseg.models.relation.postprocess import class_box_label_nms
from sgseg.models.relation.sampling import overlapping_pairs
from sgseg.models.scene_graph import assign_gt_labels
from sgseg.structures import RelationPredictions

from .conftest import REPO

TINY = SyntheticConfig(seed=3, num_vg_train=16, num_vg_test=6, num_coco_train=8, num_coco_val=4)
TINY_OVERRIDES = [
    "data.generate.num_vg_train=16",
    "data.generate.num_vg_test=6",
    "data.generate.num_coco_train=8",
    "data.generate.num_coco_val=4",
    "data.generate.seed=3",
    "data.vg.num_val=4",
    "data.loader.batch_size_vg=2",
    "data.loader.batch_size_coco=2",
    "data.loader.eval_batch_size=3",
    "detector.trainer.max_steps=-1",
    "detector.trainer.max_epochs=1",
    "detector.trainer.val_check_interval=1.0",
    "detector.trainer.check_val_every_n_epoch=1",
    "detector.backbone.channels=[8,16,16,32]",
    "detector.backbone.out_channels=16",
    "detector.net.representation_size=64",
    "detector.net.mask_head_channels=[16]",
    "detector.net.mask_dim_reduced=16",
    "model.context.embed_dim=50",  # = the synthetic word vectors (model.label_vectors)
    "model.context.hidden_dim=32",
    "model.grounding.hidden_dim=32",
    "model.grounding.out_dim=32",
    "model.predictor.pooling_dim=32",
    "model.refine_head.hidden=16",
    "model.refine_head.num_convs=1",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sgdata")
    generate(root / "synthetic", TINY, num_workers=1)
    return root


def _cfg(data_dir, *extra):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(
            "train",
            overrides=[f"paths.data_dir={data_dir}", "paths.output_dir=unused", *TINY_OVERRIDES, *extra],
        )


def _build(data_dir, *extra):
    cfg = _cfg(data_dir, *extra)
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    vg = dm.dataset("vg", "train")
    detector = build_detector(cfg, len(vg.object_classes), len(dm.dataset("coco", "train").class_names))
    inputs = stage_two_inputs(cfg, dm)
    model = build_stage2(cfg, detector, inputs)
    return cfg, dm, model, inputs


def _first_batch(dm):
    return next(iter(dm.train_dataloader()))


@pytest.mark.parametrize("mode", ["predcls", "sgcls", "sgdet"])
def test_forward_contract_in_each_task(data_dir, mode):
    cfg, dm, model, inputs = _build(data_dir)
    batch = _first_batch(dm)
    images, targets = batch["vg"]
    model.train()
    out = model(images, targets, mode)
    p = out.predictions
    assert isinstance(p, RelationPredictions)
    c_rel = len(inputs.predicates) + 1
    assert p.rel_logits.shape == (p.pair_index.shape[0], c_rel)
    assert out.rel_labels.shape == (p.pair_index.shape[0],)
    # both ends of every pair are in the same image, never a self pair
    assert torch.equal(p.image_index[p.pair_index[:, 0]], p.image_index[p.pair_index[:, 1]])
    assert (p.pair_index[:, 0] != p.pair_index[:, 1]).all()
    if mode == "predcls":
        assert torch.equal(p.labels, targets.labels) and torch.all(p.scores == 1)
    if mode != "sgdet":
        # GT boxes pass through untouched; every GT relation pair is among the foreground pairs
        assert torch.equal(p.boxes, targets.boxes)
        fg = {tuple(x) for x in p.pair_index[out.rel_labels > 0].tolist()}
        assert {tuple(x) for x in targets.relations[:, :2].tolist()} <= fg
    model.eval()
    model.test_require_overlap = False
    with torch.no_grad():
        ev = model(images, targets, mode).predictions
    # at test every ordered pair of each image is scored (SGDet: with the overlap filter off)
    counts = torch.bincount(ev.image_index, minlength=images.num_images)
    assert ev.pair_index.shape[0] == int((counts * (counts - 1)).sum())
    if mode == "sgdet":  # the default: only pairs of overlapping detections (paper Sec. 3.3)
        model.test_require_overlap = True
        with torch.no_grad():
            dets = model._detect(images, targets, mode)[1]
            ev = model(images, targets, mode).predictions
        assert torch.equal(ev.pair_index, overlapping_pairs(dets.boxes, dets.image_index))


def test_detector_frozen_and_refinement_starts_as_identity(data_dir):
    cfg, dm, model, inputs = _build(data_dir)
    module = SceneGraphModule(
        model, "sgcls", len(inputs.object_classes) + 1, len(inputs.predicates) + 1, lr=0.05
    )
    before = {k: v.clone() for k, v in model.detector.state_dict().items()}
    batch = _first_batch(dm)
    # zero-initialised last layer: refined == unrefined COCO mask logits before any step
    refined, unrefined = model.coco_refinement_logits(*batch["coco"])
    assert torch.equal(refined, unrefined)
    # no detector parameter is handed to the optimizer
    opt = module.configure_optimizers()["optimizer"]
    opt_ids = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not opt_ids & {id(p) for p in model.detector.parameters()}
    model.train()
    assert not model.detector.training  # BatchNorm/RPN stay in inference mode
    for _ in range(2):
        parts = module.losses(batch)
        assert set(parts) == {"rel", "obj", "seg"}
        loss = sum(parts.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.detector.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    refined, unrefined = model.coco_refinement_logits(*batch["coco"])
    assert not torch.equal(refined, unrefined)  # the COCO loss moved the refinement head


def test_vctree_adds_the_tree_loss(data_dir):
    cfg, dm, model, inputs = _build(data_dir, "model/context=vctree")
    module = SceneGraphModule(model, "predcls", len(inputs.object_classes) + 1, len(inputs.predicates) + 1)
    parts = module.losses(_first_batch(dm))
    assert set(parts) == {"rel", "tree", "seg"} and parts["tree"].item() > 0


@pytest.mark.parametrize("mode", ["predcls", "sgcls"])
def test_coco_step_alone_trains_context_and_node_grounding(data_dir, mode):
    """Paper Eq. 11: L_seg reaches everything trainable upstream of z^o; only the detector is frozen. The
    refinement head's last layer starts at zero, so the first backward reaches only that layer; after one SGD
    step on the COCO batch alone the second backward reaches the context model and the node grounding."""
    cfg, dm, model, inputs = _build(data_dir)
    module = SceneGraphModule(model, mode, len(inputs.object_classes) + 1, len(inputs.predicates) + 1, lr=0.5)
    opt = module.configure_optimizers()["optimizer"]
    c_images, c_targets = _first_batch(dm)["coco"]
    model.train()
    assert model.context.training
    for _ in range(2):
        opt.zero_grad()
        refined, _ = model.coco_refinement_logits(c_images, c_targets, mode=mode)
        refinement_loss(refined, c_targets.labels, c_targets.masks, c_targets.boxes).backward()
        opt.step()
    assert all(p.grad is None for p in model.detector.parameters())
    for name, p in model.node_grounding.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"node_grounding.{name}"
    ctx = model.context
    for name, p in [*ctx.obj_ctx_rnn.named_parameters(), *ctx.lin_obj_h.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, f"context.{name}"
    # the input label path of the run's task: the COCO label table (PredCls) or the VG one (SGCls)
    table = ctx.source_embed if mode == "predcls" else ctx.obj_embed1
    assert table.weight.grad is not None and table.weight.grad.abs().sum() > 0
    unused = ctx.obj_embed1 if mode == "predcls" else ctx.source_embed
    assert unused.weight.grad is None or unused.weight.grad.abs().sum() == 0


def test_second_refinement_pass(data_dir):
    """refine_passes=2 reruns node grounding and context on the refined masks: with the zero-initialised head it
    equals one pass exactly; with a non-zero head its node features (and relation logits) differ."""
    cfg, dm, model, inputs = _build(data_dir)
    images, targets = _first_batch(dm)["vg"]
    model.eval()
    seen: list[torch.Tensor] = []
    hook = model.node_grounding.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))

    def run(passes):
        model.refine_passes = passes
        seen.clear()
        with torch.no_grad():
            out = model(images, targets, "sgcls")
        return out, list(seen)

    one, nodes1 = run(1)
    two, nodes2 = run(2)
    assert len(nodes1) == 1 and len(nodes2) == 2
    assert torch.equal(nodes2[1], nodes1[0])  # zero residual: refined masks == transferred masks
    assert torch.equal(two.predictions.rel_logits, one.predictions.rel_logits)
    assert torch.equal(two.context.obj_logits, one.context.obj_logits)
    with torch.no_grad():
        torch.nn.init.normal_(model.refinement.predictor.weight, std=0.5)
        torch.nn.init.normal_(model.refinement.predictor.bias, std=2.0)
    one, nodes1 = run(1)
    two, nodes2 = run(2)
    assert torch.equal(nodes2[0], nodes1[0])  # pass 1 of both: unrefined masks
    assert not torch.allclose(nodes2[1], nodes2[0])  # pass 2: grounded on the refined masks
    assert not torch.allclose(two.predictions.rel_logits, one.predictions.rel_logits)
    assert torch.equal(two.vg_mask_probs, one.vg_mask_probs)  # both edge groundings see the refined masks
    zero, nodes0 = run(0)
    assert len(nodes0) == 1 and not torch.equal(zero.vg_mask_probs, one.vg_mask_probs)
    hook.remove()


def test_label_tables_start_at_the_word_vectors(data_dir):
    cfg, dm, model, inputs = _build(data_dir, "model/context=vctree")
    vectors = load_word_vectors(cfg.model.label_vectors)
    rows = torch.stack([torch.from_numpy(vectors[n.replace(" ", "_")]) for n in inputs.object_classes])
    coco = torch.stack([torch.from_numpy(vectors[n.replace(" ", "_")]) for n in inputs.coco_classes])
    ctx = model.context
    assert torch.equal(ctx.obj_embed1.weight[1:], rows) and torch.equal(ctx.obj_embed2.weight[1:], rows)
    assert torch.equal(ctx.decoder.embed.weight[2:], rows)  # row 0 "start", label l → row l + 1
    assert torch.equal(ctx.source_embed.weight[1:], coco)
    # the tree prior is the train co-occurrence, symmetrised
    w = cooccurrence_prior(inputs.fg_matrix)
    assert torch.allclose(ctx.pair_prior.detach(), w + w.T)


@pytest.mark.parametrize(
    "node,edge,refine", [("none", "none", "off"), ("masks", "avg", "on"), ("masks", "union", "off")]
)
def test_ablation_variants_build_and_run(data_dir, node, edge, refine):
    cfg, dm, model, inputs = _build(
        data_dir, f"model/grounding/node={node}", f"model/grounding/edge={edge}", f"model/refine={refine}"
    )
    assert (model.refinement is None) == (refine == "off")
    module = SceneGraphModule(model, "predcls", len(inputs.object_classes) + 1, len(inputs.predicates) + 1)
    loss = sum(module.losses(_first_batch(dm)).values())
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    "extra",
    [[], ["detector.joint=false"], ["experiment=synthetic_detector_vgonly"]],
    ids=["joint", "vgonly", "nococo"],
)
def test_detector_coco_heads_match_the_synthetic_label_space(data_dir, extra):
    """Stage 1 without COCO batches (or without COCO files) still builds 5 COCO-like classes, so that stage 2's
    similarity (T x 5) fits its mask head."""
    from sgseg.lit.build import coco_class_count

    cfg = _cfg(data_dir, *extra)
    dm = build_datamodule(cfg, with_coco=bool(cfg.detector.get("joint", True)))
    assert coco_class_count(cfg, dm) == 5
    assert (dm.coco_factory is None) == (extra != [])  # the VG-only detector trains without COCO batches


def test_assign_gt_labels_by_iou_and_image():
    det = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]])
    det_img = torch.tensor([0, 1, 0])
    gt = torch.tensor([[0.0, 0, 10, 12], [0, 0, 10, 10]])
    gt_img = torch.tensor([0, 0])
    # det 0: IoU 100/120 with gt 0 (label 7) -> 7, and 1.0 with gt 1 (label 3) -> best is gt 1 -> 3
    # det 1 is in image 1, which has no GT -> 0; det 2 overlaps nothing -> 0
    assert assign_gt_labels(det, det_img, gt, torch.tensor([7, 3]), gt_img).tolist() == [3, 0, 0]


def test_fast_dev_run_writes_metrics_json(data_dir, tmp_path):
    cfg, dm, model, inputs = _build(data_dir)
    coco_val = dm.dataset("coco", "val")
    module = SceneGraphModule(
        model, "predcls", len(inputs.object_classes) + 1, len(inputs.predicates) + 1,
        zeroshot_triplets=inputs.zeroshot, predicate_names=inputs.predicates,
        coco_val_gt=coco_val.coco, coco_label_to_category=coco_val.label_to_category,
        object_names=inputs.object_classes,
    )  # fmt: skip
    trainer = pl.Trainer(
        default_root_dir=str(tmp_path), fast_dev_run=True, logger=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    trainer.test(module, datamodule=dm)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for k in (20, 50, 100):
        for name in ("R", "ngR", "mR", "ng-mR"):
            assert 0.0 <= metrics[f"predcls/{name}@{k}"] <= 1.0
    assert len(metrics["predcls/mR_per_predicate@100"]) == len(inputs.predicates)
    # the refinement head is zero-initialised and fast_dev_run's one step barely moves it
    assert metrics["predcls/mask_AP_refined"] == metrics["predcls/mask_predcls_AP_refined"]
    for setting in ("predcls", "sgcls", "sgdet"):  # paper Table 2's three settings
        for kind in ("refined", "unrefined"):
            assert -1.0 <= metrics[f"predcls/mask_{setting}_AP_{kind}"] <= 1.0
    assert (tmp_path / "predcls_per_predicate_recall.png").stat().st_size > 1000
    # the per-image counts give back metrics.json's numbers exactly (sgseg.results bootstraps over them)
    with np.load(tmp_path / "predcls_per_image.npz") as f:
        per_image = {k: f[k] for k in f.files}
    assert str(per_image["mode"]) == "predcls" and list(per_image["predicate_names"]) == inputs.predicates
    assert per_image["counted"].sum() == metrics["predcls/num_images"]
    for k in (20, 50, 100):
        again = recall_from_per_image(per_image, k)
        assert again[f"mR@{k}"] == metrics[f"predcls/mR@{k}"] and again[f"R@{k}"] == metrics[f"predcls/R@{k}"]
    # pictures of the first validation and test images' predictions (masks, boxes, graph)
    assert len(list((tmp_path / "val_predictions").glob("*.png"))) == 2
    assert len(list((tmp_path / "test_predictions").glob("*.png"))) == 2
    table = results_table(metrics, "predcls")
    assert table.splitlines()[0].split() == ["metric", "@20", "@50", "@100"]


@pytest.mark.parametrize("mode", ["predcls", "sgdet"])
def test_chunked_equals_unchunked(data_dir, mode):
    """Union features + edge grounding + predictor over pairs in chunks give the all-at-once result, at test
    and in training (loss and gradients)."""
    cfg, dm, model, inputs = _build(data_dir)
    model.detector.score_thresh = 0.0  # an untrained detector: keep its detections
    batch = _first_batch(dm)
    images, targets = batch["vg"]
    model.eval()
    outs = {}
    for chunk in (10**9, 7, 1):
        model.pair_chunk_size = chunk
        with torch.no_grad():
            outs[chunk] = model(images, targets, mode).predictions
    assert outs[7].pair_index.shape[0] > 7  # several chunks, across the images of the batch
    for chunk in (7, 1):
        assert torch.equal(outs[chunk].pair_index, outs[10**9].pair_index)
        torch.testing.assert_close(outs[chunk].rel_logits, outs[10**9].rel_logits, rtol=1e-5, atol=1e-5)
        assert torch.equal(outs[chunk].labels, outs[10**9].labels)
    if mode != "predcls":
        return  # training: an untrained SGDet detector may match no GT box (no pair, empty loss)
    model.train()
    grads = {}
    for chunk in (10**9, 5):
        model.pair_chunk_size = chunk
        model.zero_grad()
        torch.manual_seed(0)  # same sampled pairs
        out = model(images, targets, mode)
        loss = torch.nn.functional.cross_entropy(out.predictions.rel_logits, out.rel_labels)
        loss.backward()
        grads[chunk] = (
            loss.detach(),
            [p.grad.clone() for p in model.predictor.parameters() if p.grad is not None],
        )
    torch.testing.assert_close(grads[5][0], grads[10**9][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(grads[5][1], grads[10**9][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("context", ["motif", "vctree"])
def test_sgdet_postprocessing_is_the_same_for_motif_and_vctree(data_dir, context):
    """Both context models' SGDet test objects are the shared post-processing of their own logits: label NMS
    with the detector's class-specific boxes, the final label's score, the final label's regressed box."""
    cfg, dm, model, inputs = _build(data_dir, f"model/context={context}")
    model.detector.score_thresh = 0.0
    images, targets = _first_batch(dm)["vg"]
    model.eval()
    with torch.no_grad():
        dets = model._detect(images, targets, "sgdet")[1]
        out = model(images, targets, "sgdet")
    p, ctx = out.predictions, out.context
    assert dets.class_boxes is not None and dets.class_boxes.shape == (
        len(dets),
        len(inputs.object_classes) + 1,
        4,
    )
    probs = ctx.obj_logits.softmax(-1)
    labels = class_box_label_nms(probs, dets.class_boxes, dets.image_index, 0.3)
    assert torch.equal(p.labels, labels) and (p.labels >= 1).all()
    torch.testing.assert_close(p.scores, probs.gather(1, labels[:, None]).squeeze(1))
    assert torch.equal(p.boxes, dets.class_boxes[torch.arange(len(dets)), labels])
    # the NMS invariant: no two detections of one image share a final label with class-box IoU >= 0.3
    from torchvision.ops import box_iou

    for i in range(len(dets)):
        for j in range(i + 1, len(dets)):
            if dets.image_index[i] == dets.image_index[j] and labels[i] == labels[j]:
                c = labels[i]
                iou = box_iou(dets.class_boxes[i, c][None], dets.class_boxes[j, c][None])[0, 0]
                assert iou < 0.3


def test_max_test_boxes_counted_in_metrics_json(data_dir, tmp_path):
    cfg, dm, model, inputs = _build(data_dir, "data.vg.max_test_boxes=5")
    unfiltered = _build(data_dir)[1].dataset("vg", "test")
    n_boxes = [unfiltered.get_groundtruth(i)["boxes"].shape[0] for i in range(len(unfiltered))]
    expected_dropped = sum(n > 5 for n in n_boxes)
    assert 0 < expected_dropped < len(n_boxes)  # the tiny benchmark has 3-8 boxes per image
    module = SceneGraphModule(
        model, "predcls", len(inputs.object_classes) + 1, len(inputs.predicates) + 1,
        zeroshot_triplets=inputs.zeroshot, predicate_names=inputs.predicates,
    )  # fmt: skip
    trainer = pl.Trainer(
        default_root_dir=str(tmp_path), logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, accelerator="cpu",
    )  # fmt: skip
    trainer.test(module, datamodule=dm)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["predcls/test_images_dropped_max_boxes"] == expected_dropped
    assert metrics["predcls/test_images_before_filter"] == len(n_boxes)
    with_rels = sum(unfiltered.get_groundtruth(i)["relations"].shape[0] > 0 for i in range(len(n_boxes)))
    assert metrics["predcls/test_images_with_relations_before_filter"] == with_rels
    assert metrics["predcls/test_images"] == len(n_boxes) - expected_dropped
    assert metrics["predcls/max_test_boxes"] == 5
    # scored: the kept images that have a GT relation (the evaluator skips the others)
    kept_with_rels = sum(
        n <= 5 and unfiltered.get_groundtruth(i)["relations"].shape[0] > 0 for i, n in enumerate(n_boxes)
    )
    assert metrics["predcls/num_images"] == kept_with_rels
    assert 0.0 <= metrics["predcls/A@20"] <= metrics["predcls/A@100"] <= 1.0
