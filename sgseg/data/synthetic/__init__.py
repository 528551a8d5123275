"""The synthetic benchmark: a small, real test of segmentation-grounded scene graph generation on a CPU.

Where this sits: the first step of every run without the real datasets. It writes a VG-like scene-graph
dataset (boxes + relations, no masks), a COCO-like instance dataset (boxes + masks) and a GloVe-format word
vector file, all in the *real* on-disk formats (``docs/data.md``), so the real loaders
(:mod:`sgseg.data.visual_genome`, :mod:`sgseg.data.coco`) and the whole pipeline run on it unchanged.
The package, bottom up: ``labels`` (label spaces, class looks, predicate constants), ``shapes`` (shapes,
textures, mask geometry), ``layout`` (placement), ``planners`` (one planner per predicate, in a table),
``scene`` (compose and paint an image, read off its true predicates), ``images`` (one image end to end,
the zero-shot hold-out), ``writers`` (VG h5/json, COCO json), ``words`` (word vectors), ``benchmark``
(:func:`generate`, :func:`ensure_synthetic`), ``cli`` (``python -m sgseg.data.synthetic``) and ``vg150``
(the real-scale preset).

What makes it a test of the paper's idea:

* the VG-like classes include NOVEL names (``plate``, ``donut``, ``crate``...) that are COCO-like source
  shapes in disguise; their word vectors sit near the source they resemble, so zero-shot mask transfer can
  find the right source channel;
* several predicates are only decidable from masks (``in hole of`` vs ``on``, ``touching`` vs ``near``,
  ``partly covering``), so mask grounding can beat a box-only model;
* predicate frequencies are long-tailed (mR@K) and a set of (subject, object, predicate) triplets is held
  out of the train split and planted in the test split (zsR@K). Nothing about them is written: the
  pipeline derives the zero-shot set from the splits, as for real VG;
* ``vg/vg_test_masks.json`` (COCO format, hidden from training) holds the true masks of the VG-like test
  objects, so transferred masks can be scored on the target dataset; ``vg/vg_train_masks.json`` the same for
  the train split (val included), for the oracle-mask upper bound (``model.mask_source=oracle``);
  ``vg/vg_{train,test}_amodal_masks.json`` the same objects' amodal masks (occluded parts included: what *on*,
  *partly covering* and *in hole of* are defined on), for an amodal oracle
  (``data.true_masks=vg_{split}_amodal_masks.json``).

Layout written under ``out_dir`` (see :class:`SyntheticLayout`)::

    synthetic_config.json                  stamp: format version + config (+ recommended num_val, stats)
    glove.synthetic.<D>d.txt               word vectors (GloVe text, no header; ``_`` joins multi-word names)
    vg/VG-SGG-with-attri.h5  vg/VG-SGG-dicts-with-attri.json  vg/image_data.json  vg/VG_100K/<id>.jpg
    vg/vg_test_masks.json                  hidden true masks of the VG-like test objects
    vg/vg_train_masks.json                 hidden true masks of the VG-like train (and val) objects
    vg/vg_{train,test}_amodal_masks.json   the same objects' amodal masks
    coco/annotations/instances_{train,val}2017.json  coco/{train,val}2017/<id:012d>.jpg

Usage: ``python -m sgseg.data.synthetic out=DIR [seed=0 num_vg_train=2000 num_vg_test=500
num_coco_train=1000 num_coco_val=200 image_size=128,160 workers=2 force=false]``, or ``preset=vg150_shapes``
for a real-scale dry run (:mod:`sgseg.data.synthetic.vg150`); from Python,
:func:`ensure_synthetic` (generate only when absent or stale) or :func:`generate`. Loaders need
``check_label_space=False`` (19 object classes, 9 predicates, 5 COCO-like classes) and VG ``num_val`` =
the stamp's ``recommended_num_val`` (10 % of train instead of the real 5000).

Measured on the default set (seed 0, FORMAT_VERSION 4; 3,700 images, 43 MB): about 25 s of CPU in all,
i.e. ~13 s wall on two idle cores (37-56 s on this project's shared 2-core machine under load). 13,693 VG
boxes (3-8 per image), 6,931 relations (train: left of 1797, near 1337, above 726, below 629, on 319,
touching 295, partly covering 194, in hole of 132, around 70); 222 held-out triplets give 210 of the 867
test triplets unseen in train. An MLP given GT boxes and labels only reaches 0.84 accuracy / 0.81 mean
per-predicate recall on the test relations (touching 0.48, in hole of 0.58); adding five mask features
(gap, adjacency, hole containment, overlap) gives 0.96 / 0.95 — the room segmentation grounding can use.
"""

from sgseg.data.synthetic.benchmark import ensure_synthetic, generate, read_stamp
from sgseg.data.synthetic.config import FORMAT_VERSION, SyntheticConfig, SyntheticLayout
from sgseg.data.synthetic.images import held_out_triplets
from sgseg.data.synthetic.labels import (
    MASK_PREDICATES,
    NOVEL_CLASSES,
    PREDICATE_PRIORITY,
    PREDICATES,
    SOURCE_CATEGORY_IDS,
    SOURCE_CLASSES,
    TARGET_CLASSES,
    TARGET_TO_SOURCE,
)
from sgseg.data.synthetic.planners import PLANNERS, feasible_pairs
from sgseg.data.synthetic.scene import SceneObject, compose_scene, pair_predicates, scene_from_objects
from sgseg.data.synthetic.words import word_vectors
from sgseg.data.synthetic.writers import encode_vg_boxes

__all__ = [
    "FORMAT_VERSION",
    "MASK_PREDICATES",
    "NOVEL_CLASSES",
    "PLANNERS",
    "PREDICATES",
    "PREDICATE_PRIORITY",
    "SOURCE_CATEGORY_IDS",
    "SOURCE_CLASSES",
    "TARGET_CLASSES",
    "TARGET_TO_SOURCE",
    "SceneObject",
    "SyntheticConfig",
    "SyntheticLayout",
    "compose_scene",
    "encode_vg_boxes",
    "ensure_synthetic",
    "feasible_pairs",
    "generate",
    "held_out_triplets",
    "pair_predicates",
    "read_stamp",
    "scene_from_objects",
    "word_vectors",
]
