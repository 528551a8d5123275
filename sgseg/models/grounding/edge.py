"""Edge grounding f_E (paper Sec. 2.5, Eq. 6–7): ẑ_{j,j'} = f_E([z_{j,j'}, m_{j,j'}]).

Where this sits: after mask transfer (and refinement), next to the node grounding; its output replaces the
plain union-box feature of each subject/object pair in the relation predictor. The relation mask m_{j,j'} is
built from the two objects' transferred masks (all C_vg class channels) by one of four variants, chosen by the
config group ``model/grounding/edge=gaussian|avg|union|none`` (one ``_target_`` node per option):

- ``gaussian`` (:class:`GaussianEdgeGrounding`): (K_j ⊛ m_j) ⊙ (K_j' ⊛ m_j'), per-object Gaussian kernels whose
  (σx, σy, ρ) a linear map predicts from the label distributions;
- ``avg`` (:class:`AvgEdgeGrounding`): (m_j + m_j') / 2;
- ``union`` (:class:`UnionEdgeGrounding`): max(m_j, m_j') (logical or) — the reference code computes avg here,
  sgseg keeps them distinct as the paper's Table 4 does;
- ``none`` (:class:`NoEdgeGrounding`): union-box feature only, through the same head.

Frames: by default (``mask_frame="union"``, the paper) both box-relative masks are first resampled into the
union box's M × M grid (:func:`paste_into_union`), zero outside each object's box; ``mask_frame="own_box"``
reproduces the reference code, which combines the two M × M masks in their own, different box frames.

Where the sigmoid goes: masks enter as probabilities (the sigmoid of the transferred logits), so every variant
combines values in [0, 1] and its result stays in [0, 1] (Gaussian kernels sum to 1). The reference code applies
one more sigmoid to the combined mask before concatenation, squashing it into [0.5, 0.73];
``sigmoid_relation_masks=True`` reproduces that, the default does not.

Everything is batched over all R pairs of the batch: one grouped convolution blurs the N objects' masks (the
2R pair members with the reference's per-pair parameters), one ``grid_sample`` pastes the 2R pair members;
there is no Python loop over pairs or objects.

Every f_E is built by :func:`sgseg.lit.build.build_stage2` with the same keywords, read from the built detector
and data: ``in_channels`` (D), ``num_mask_channels`` (C_vg), ``num_label_classes`` (C_obj) and ``roi_size`` (the
mask side M); its own hyper-parameters come from its config node. It exposes ``out_dim`` and is called as
``f(union_features, mask_probs, boxes, pair_index, label_probs)``; one with a ``relation_masks`` method reads
masks (the model then keeps them for it).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sgseg.models.grounding.kernels import blur_per_sample, gaussian_kernels
from sgseg.models.grounding.node import GroundingHead
from sgseg.ops.boxes import union_boxes

MaskFrame = Literal["union", "own_box"]


# False: resample with ``grid_sample`` (the plain path, kept for scripts/bench_stage2.py and tests); True: the
# same bilinear samples as two batched matrix products (:func:`resample_weights`), whose backward is two more
# instead of grid_sample's scatter (on CPU 3x faster forward + backward at the synthetic sizes).
SEPARABLE_RESAMPLE = True


def resample_weights(
    lo: Tensor, hi: Tensor, frame_lo: Tensor, frame_hi: Tensor, size: int, out_size: int
) -> Tensor:
    """Float[B, out_size, size]: 1-D bilinear resampling matrices, one per row of the inputs (Float[B] each).

    Row b maps a ``size``-cell grid covering [lo[b], hi[b]] to the centres of the ``out_size`` cells of
    [frame_lo[b], frame_hi[b]]: the sample at normalised position t = (x − lo) / (hi − lo) reads grid
    coordinate p = t·size − 0.5 clamped to [0, size − 1] (``grid_sample``'s ``align_corners=False`` with
    ``padding_mode="border"``), linearly between cells ⌊p⌋ and ⌊p⌋ + 1; cells whose centre has t outside
    [0, 1] get an all-zero row. At most two non-zeros per row, summing to 1 (or 0 outside).
    """
    dtype = lo.dtype
    cells = (torch.arange(out_size, device=lo.device, dtype=dtype) + 0.5) / out_size
    pos = frame_lo[:, None] + cells * (frame_hi - frame_lo)[:, None]  # [B, S] image coordinate of the centres
    t = (pos - lo[:, None]) / (hi - lo).clamp_min(1e-6)[:, None]  # degenerate box: every cell outside
    inside = ((t >= 0) & (t <= 1)).to(dtype)
    p = (t * size - 0.5).clamp(0, size - 1)
    i0 = p.floor().clamp(max=size - 1)
    w1 = (p - i0) * inside
    i0 = i0.long()
    i1 = (i0 + 1).clamp(max=size - 1)
    weights = torch.zeros(lo.shape[0], out_size, size, device=lo.device, dtype=dtype)
    weights.scatter_add_(2, i0[..., None], (inside - w1)[..., None])
    return weights.scatter_add_(2, i1[..., None], w1[..., None])


def resample_to_frames(
    masks: Tensor, mask_boxes: Tensor, frames: Tensor, out_size: int, index: Tensor | None = None
) -> Tensor:
    """Resample box-relative masks into other boxes' grids: Float[B, C, S, S].

    masks: Float[B, C, m_h, m_w], each grid covering ``mask_boxes[b]`` (Float[B, 4] xyxy) exactly;
    frames: Float[B, 4] xyxy, the box whose S × S grid (S = out_size) each output covers.
    Each output cell takes the bilinear sample of the mask at the cell centre, in box-relative coordinates
    (``grid_sample``, ``align_corners=False``, whose pixel centres are the mask cells' centres); cells whose
    centre lies outside the mask's box are 0. Inside the box, samples less than half a cell from its edge clamp
    to the edge cell (``padding_mode="border"``) rather than fading to 0.

    The sampling grid is separable (a cell's x depends on its column only, y on its row only), so the result is
    W_y · mask · W_xᵀ per channel with the 1-D matrices of :func:`resample_weights`: two batched matrix products
    (``SEPARABLE_RESAMPLE``; equal to the ``grid_sample`` route to float tolerance, tested). The result is then a
    view in [B, S, C, S] storage order (elementwise consumers and ``cat_channels`` take any layout; call
    ``.contiguous()`` where NCHW storage matters).

    index: Long[B], optional — resample ``masks[index]`` (``masks``: Float[N, C, m_h, m_w], ``mask_boxes`` and
    ``frames`` then per output row): the separable route lays out the N masks once and gathers the B rows from
    that, instead of gathering B copies and laying each out again.
    """
    n, c, mh, mw = masks.shape
    b = n if index is None else index.shape[0]
    s = out_size
    if b == 0:
        return masks.new_zeros(0, c, s, s)
    # Coordinates in float32 at least: half precision resolves only ~0.5 px at x ≈ 1000.
    dtype = torch.promote_types(masks.dtype, torch.float32)
    own, frames = mask_boxes.to(dtype), frames.to(dtype)
    if SEPARABLE_RESAMPLE:
        wy = resample_weights(own[:, 1], own[:, 3], frames[:, 1], frames[:, 3], mh, s).to(masks.dtype)
        wx = resample_weights(own[:, 0], own[:, 2], frames[:, 0], frames[:, 2], mw, s).to(masks.dtype)
        src = masks.transpose(1, 2).reshape(n, mh, c * mw)  # [N, mh, C·mw]
        if index is not None:
            src = src.index_select(0, index)
        rows = torch.bmm(wy, src)  # [B, S, C·mw]: rows resampled
        out = torch.bmm(rows.view(b, s * c, mw), wx.transpose(1, 2))  # [B, S·C, S]: then the columns
        return out.view(b, s, c, s).transpose(1, 2)
    if index is not None:
        masks = masks[index]
    cells = (torch.arange(s, device=masks.device, dtype=dtype) + 0.5) / s  # [S]
    xs = frames[:, 0:1] + cells * (
        frames[:, 2:3] - frames[:, 0:1]
    )  # [B, S] image x of the frame's cell centres
    ys = frames[:, 1:2] + cells * (frames[:, 3:4] - frames[:, 1:2])
    # Degenerate (zero-size) boxes: tiny width puts every cell "outside", so the result is 0, not NaN.
    tx = (xs - own[:, 0:1]) / (own[:, 2:3] - own[:, 0:1]).clamp_min(1e-6)  # in [0, 1] inside the box
    ty = (ys - own[:, 1:2]) / (own[:, 3:4] - own[:, 1:2]).clamp_min(1e-6)
    grid = torch.stack(
        [(2 * tx - 1).unsqueeze(1).expand(-1, s, -1), (2 * ty - 1).unsqueeze(2).expand(-1, -1, s)], dim=-1
    ).to(masks.dtype)  # [B, S(rows, y), S(cols, x), 2] with (x, y) order, as grid_sample expects
    inside = ((ty >= 0) & (ty <= 1)).unsqueeze(2) & ((tx >= 0) & (tx <= 1)).unsqueeze(1)  # [B, S, S]
    out = F.grid_sample(masks, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out * inside.unsqueeze(1).to(out.dtype)


def paste_into_union(
    mask_probs: Tensor,
    boxes: Tensor,
    pair_index: Tensor,
    out_size: int | None = None,
    mask_boxes: Tensor | None = None,
) -> Tensor:
    """Resample each pair member's box-relative mask into its pair's union-box grid (one ``grid_sample``).

    mask_probs: Float[N, C, M, M] box-relative (the M × M grid covers the object's box exactly, Mask R-CNN style).
    boxes: Float[N, 4] xyxy, same image frame for all boxes of a pair. pair_index: Long[R, 2] (subject, object).
    out_size: side S of the union grid (default M).
    mask_boxes: Float[N, 4], the boxes the mask grids cover when they are not ``boxes`` (e.g. a grid grown by a
    blur, :func:`grow_boxes`); the union is still that of ``boxes``.
    Returns Float[2, R, C, S, S]: [0] subjects, [1] objects, in the union box's S × S grid; sampling as in
    :func:`resample_to_frames`.
    """
    c, m = mask_probs.shape[1], mask_probs.shape[-1]
    s = m if out_size is None else out_size
    r = pair_index.shape[0]
    members = pair_index.t().reshape(-1)  # [2R], subjects then objects
    union = union_boxes(boxes, pair_index).repeat(2, 1)  # [2R, 4]
    grids = boxes if mask_boxes is None else mask_boxes
    return resample_to_frames(mask_probs, grids[members], union, s, index=members).view(2, r, c, s, s)


def grow_boxes(boxes: Tensor, grid_size: int, cells: int) -> Tensor:
    """Float[N, 4]: each box grown by ``cells`` cells of its ``grid_size`` × ``grid_size`` grid on every side.

    The box covered by the (grid_size + 2·cells)² output of a full convolution of its mask.
    """
    wh = (boxes[:, 2:] - boxes[:, :2]) / grid_size * cells
    return torch.cat([boxes[:, :2] - wh, boxes[:, 2:] + wh], dim=1)


def unordered_pairs(pair_index: Tensor) -> tuple[Tensor, Tensor]:
    """The distinct unordered pairs among ordered ones: (first: Long[U], inverse: Long[R]).

    pair_index: Long[R, 2]. ``first`` holds, for each distinct {subject, object}, the row of its first
    occurrence; ``inverse[r]`` is the position in ``first`` of row r's unordered pair, so
    ``pair_index[first][inverse]`` is ``pair_index`` up to swapping the two columns of some rows.
    """
    r = pair_index.shape[0]
    if r == 0:
        empty = pair_index.new_zeros(0)
        return empty, empty
    lo = torch.minimum(pair_index[:, 0], pair_index[:, 1])
    hi = torch.maximum(pair_index[:, 0], pair_index[:, 1])
    _, inverse = torch.unique(lo * (int(hi.max()) + 1) + hi, return_inverse=True)
    rows = torch.arange(r, device=pair_index.device)
    first = torch.full((int(inverse.max()) + 1,), r, dtype=torch.long, device=pair_index.device)
    first.scatter_reduce_(0, inverse, rows, reduce="amin")
    return first, inverse


# False runs f_E on every ordered pair as given (the plain path, kept for scripts/bench_stage2.py and tests)
ONCE_PER_UNORDERED_PAIR = True


def forward_once_per_unordered_pair(fn, union_features: Tensor, pair_index: Tensor) -> Tensor:
    """``fn(union_features, pair_index)`` (a per-pair map, Float[R, ...]) evaluated once per unordered pair.

    For the symmetric f_E variants ẑ_{j,j'} = ẑ_{j',j}: the union box, hence its RoI feature, is the same for
    both orders and every symmetric combination of the two masks (product, mean, max) is too. In training
    the sampler takes almost every ordered pair of an image and at test all of them, so computing each
    unordered pair once halves f_E, its head's backward included. The result equals the direct call to float
    tolerance: the reverse row is a copy of the same per-row computation (a conv over U rows instead of R may
    round differently, as oneDNN blocks by batch size), and the gather's backward sums the two copies'
    gradients. Only when the reverse rows' union features are equal (always, when they come from RoIAlign of
    the same box) — otherwise ``fn`` runs on all R rows as given.
    """
    if not ONCE_PER_UNORDERED_PAIR:
        return fn(union_features, pair_index)
    first, inverse = unordered_pairs(pair_index)
    if first.numel() == pair_index.shape[0]:
        return fn(union_features, pair_index)
    rows = torch.arange(pair_index.shape[0], device=pair_index.device)
    dup = rows != first[inverse]
    if not torch.equal(union_features[dup], union_features[first[inverse[dup]]]):
        return fn(union_features, pair_index)
    return fn(union_features[first], pair_index[first])[inverse]


class _MaskEdgeGrounding(nn.Module):
    """Shared body of the mask-using f_E variants: pair frames → combine (subclass) → head.

    num_label_classes: C_obj, part of the common builder call; only the Gaussian variant reads labels.
    pair_mask_dropout: p — in training only, each (unordered) pair's m_{j,j'} is replaced by zeros with
    probability p before f_E (not rescaled: the all-zero input of a test on all-zero masks). 0 (default, the
    paper): never, and no random number is drawn. A probe of how a branch copes without its masks, not part of
    the method.
    """

    def __init__(
        self,
        in_channels: int,
        num_mask_channels: int,
        hidden_dim: int = 1024,
        out_dim: int = 1024,
        roi_size: int = 28,
        pool_size: int = 7,
        mask_frame: MaskFrame = "union",
        sigmoid_relation_masks: bool = False,
        conv_relu: bool = True,
        num_label_classes: int | None = None,
        pair_mask_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if mask_frame not in ("union", "own_box"):
            raise ValueError(
                f"{type(self).__name__}: `mask_frame` must be 'union' or 'own_box', got {mask_frame!r}"
            )
        if not 0.0 <= float(pair_mask_dropout) < 1.0:
            raise ValueError(
                f"{type(self).__name__}: `pair_mask_dropout` must be in [0, 1), got {pair_mask_dropout!r}"
            )
        self.pair_mask_dropout = float(pair_mask_dropout)
        self.mask_frame = mask_frame
        self.sigmoid_relation_masks = sigmoid_relation_masks
        self.head = GroundingHead(
            in_channels, num_mask_channels, hidden_dim, out_dim, roi_size, pool_size, conv_relu
        )

    @property
    def out_dim(self) -> int:
        return self.head.out_dim

    @property
    def symmetric(self) -> bool:
        """Whether m_{j,j'} = m_{j',j} (then f_E runs once per unordered pair)."""
        return True

    def pair_masks(self, mask_probs: Tensor, boxes: Tensor, pair_index: Tensor) -> Tensor:
        """Float[2, R, C, S, S]: subject and object masks in the frame the pair is combined in."""
        s = self.head.roi_size
        if self.mask_frame == "union":
            return paste_into_union(mask_probs, boxes, pair_index, out_size=s)
        self._check_own_box_size(mask_probs)
        return mask_probs[pair_index.t()]

    def _check_own_box_size(self, mask_probs: Tensor) -> None:
        s = self.head.roi_size
        if mask_probs.shape[-1] != s:
            raise ValueError(
                f"{type(self).__name__}: with mask_frame='own_box' the mask side ({mask_probs.shape[-1]}) must equal "
                f"roi_size ({s}); resize the masks or use mask_frame='union'"
            )

    def combine(self, pair_masks: Tensor, pair_index: Tensor, label_probs: Tensor | None) -> Tensor:
        raise NotImplementedError

    def relation_masks(
        self, mask_probs: Tensor, boxes: Tensor, pair_index: Tensor, label_probs: Tensor | None = None
    ) -> Tensor:
        """m_{j,j'}: Float[R, C_vg, S, S] in [0, 1] (in [0.5, 0.74) with ``sigmoid_relation_masks``)."""
        rel = self.combine(self.pair_masks(mask_probs, boxes, pair_index), pair_index, label_probs)
        return rel.sigmoid() if self.sigmoid_relation_masks else rel

    def drop_pair_masks(self, rel: Tensor) -> Tensor:
        """``pair_mask_dropout``: in training, zero each row of ``rel`` (Float[R, ...]) with probability p."""
        if not self.training or self.pair_mask_dropout == 0.0 or rel.shape[0] == 0:
            return rel
        keep = torch.rand(rel.shape[0], device=rel.device) >= self.pair_mask_dropout
        return rel * keep.view(-1, *([1] * (rel.dim() - 1))).to(rel.dtype)

    def forward(
        self,
        union_features: Tensor,
        mask_probs: Tensor,
        boxes: Tensor,
        pair_index: Tensor,
        label_probs: Tensor | None = None,
    ) -> Tensor:
        """union_features: Float[R, D, S, S] RoIAlign features of each pair's union box (S = roi_size);
        mask_probs: Float[N, C_vg, M, M] transferred masks in [0, 1], box-relative; boxes: Float[N, 4] xyxy;
        pair_index: Long[R, 2] flat (subject, object) indices into the N objects; label_probs: Float[N, C_obj]
        label distributions (used by the Gaussian variant only).

        Returns Float[R, out_dim], the grounded ẑ_{j,j'}.
        """
        name = type(self).__name__
        if (
            pair_index.dim() != 2
            or pair_index.shape[1] != 2
            or union_features.shape[0] != pair_index.shape[0]
        ):
            raise ValueError(
                f"{name}: `pair_index` must be Long[R, 2] with R = union_features.shape[0] = "
                f"{union_features.shape[0]}, got {tuple(pair_index.shape)}"
            )
        if mask_probs.shape[0] != boxes.shape[0]:
            raise ValueError(
                f"{name}: `mask_probs` has {mask_probs.shape[0]} rows but `boxes` has {boxes.shape[0]}"
            )

        def per_pair(feats: Tensor, pairs: Tensor) -> Tensor:
            return self.head(
                feats, self.drop_pair_masks(self.relation_masks(mask_probs, boxes, pairs, label_probs))
            )

        if not self.symmetric:
            return per_pair(union_features, pair_index)
        return forward_once_per_unordered_pair(per_pair, union_features, pair_index)


class AvgEdgeGrounding(_MaskEdgeGrounding):
    """``avg``: m_{j,j'} = (m_j + m_j') / 2 (paper Table 4)."""

    def combine(self, pair_masks: Tensor, pair_index: Tensor, label_probs: Tensor | None) -> Tensor:
        return 0.5 * (pair_masks[0] + pair_masks[1])


class UnionEdgeGrounding(_MaskEdgeGrounding):
    """``union``: m_{j,j'} = max(m_j, m_j'), the soft logical or of the two masks (paper Table 4)."""

    def combine(self, pair_masks: Tensor, pair_index: Tensor, label_probs: Tensor | None) -> Tensor:
        return torch.maximum(pair_masks[0], pair_masks[1])


class GaussianEdgeGrounding(_MaskEdgeGrounding):
    """``gaussian`` (the paper's f_E): m_{j,j'} = (K_j ⊛ m_j) ⊙ (K_j' ⊛ m_j'), per class channel.

    num_label_classes: C_obj, width of the label distributions (151 on VG).
    kernel_size: k of the k × k kernels (paper 7).
    joint_pair_params: False (paper) — (σx, σy, ρ) of object j from Linear(C_obj → 3) on l_j alone;
    True (reference) — the six parameters of a pair from Linear(2·C_obj → 6) on [l_subject, l_object].
    Parameters: σ = exp(0.5 v) (v a log-variance), ρ = tanh(v_ρ). The linear map starts at zero, so every kernel
    starts as the isotropic σ = 1 Gaussian and learns from there.
    σ is in cells of the object's own M × M mask grid, so a kernel means the same whatever the partner: each
    mask is blurred in its own frame and then (``mask_frame="union"``) pasted into the union frame — as a full
    convolution on a grid grown by k//2 cells, so blur that spills past the object's box is kept. With
    ``own_box`` the blurred masks are multiplied in their own frames (reference). All masks go through ONE
    grouped convolution: the N objects (per-object parameters) or the 2R pair members (joint parameters).
    """

    def __init__(
        self,
        in_channels: int,
        num_mask_channels: int,
        num_label_classes: int,
        hidden_dim: int = 1024,
        out_dim: int = 1024,
        roi_size: int = 28,
        pool_size: int = 7,
        mask_frame: MaskFrame = "union",
        sigmoid_relation_masks: bool = False,
        kernel_size: int = 7,
        joint_pair_params: bool = False,
        conv_relu: bool = True,
        pair_mask_dropout: float = 0.0,
    ) -> None:
        super().__init__(
            in_channels,
            num_mask_channels,
            hidden_dim,
            out_dim,
            roi_size,
            pool_size,
            mask_frame,
            sigmoid_relation_masks,
            conv_relu,
            pair_mask_dropout=pair_mask_dropout,
        )
        self.num_label_classes = num_label_classes
        self.kernel_size = kernel_size
        self.joint_pair_params = joint_pair_params
        self.param_map = nn.Linear(
            num_label_classes * (2 if joint_pair_params else 1), 6 if joint_pair_params else 3
        )
        nn.init.zeros_(self.param_map.weight)
        nn.init.zeros_(self.param_map.bias)

    @property
    def symmetric(self) -> bool:
        # the reference's joint parameters read [l_subject, l_object] in order: K depends on the order
        return not self.joint_pair_params

    def kernel_params(self, label_probs: Tensor, pair_index: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """(σx, σy, ρ), each Float[2R]: subjects' then objects' parameters, in grid cells.

        With ``pair_index=None`` (per-object parameters only): each Float[N], one set per object.
        """
        if label_probs is None or label_probs.dim() != 2 or label_probs.shape[1] != self.num_label_classes:
            got = None if label_probs is None else tuple(label_probs.shape)
            raise ValueError(
                f"GaussianEdgeGrounding: `label_probs` must be Float[N, {self.num_label_classes}] (softmax of the VG "
                f"label logits), got {got}"
            )
        if self.joint_pair_params:
            if pair_index is None:
                raise ValueError("GaussianEdgeGrounding: joint_pair_params needs `pair_index`")
            v = self.param_map(
                torch.cat([label_probs[pair_index[:, 0]], label_probs[pair_index[:, 1]]], dim=1)
            )
            v = v.view(-1, 2, 3).transpose(0, 1).reshape(-1, 3)  # [2R, 3], subjects then objects
        else:
            v = self.param_map(label_probs)  # [N, 3]
            if pair_index is not None:
                v = v[pair_index.t().reshape(-1)]  # [2R, 3]
        return torch.exp(0.5 * v[:, 0]), torch.exp(0.5 * v[:, 1]), torch.tanh(v[:, 2])

    def relation_masks(
        self, mask_probs: Tensor, boxes: Tensor, pair_index: Tensor, label_probs: Tensor | None = None
    ) -> Tensor:
        k, s = self.kernel_size, self.head.roi_size
        r, c, m = pair_index.shape[0], mask_probs.shape[1], mask_probs.shape[-1]
        if self.joint_pair_params:
            # Reference: a kernel per pair member, so the 2R member copies are blurred.
            members = pair_index.t().reshape(-1)
            kernels = gaussian_kernels(*self.kernel_params(label_probs, pair_index), size=k)
            maps, grid_boxes = mask_probs[members], boxes[members]
        else:
            # Paper: a kernel per object, so the N objects are blurred once and their R ≈ N² pairs share them.
            kernels = gaussian_kernels(*self.kernel_params(label_probs, None), size=k)
            maps, grid_boxes = mask_probs, boxes
        if self.mask_frame == "own_box":
            self._check_own_box_size(mask_probs)
            blurred = blur_per_sample(maps, kernels)
            pair = blurred.view(2, r, c, m, m) if self.joint_pair_params else blurred[pair_index.t()]
        else:
            # Full convolution: the blurred mask covers its box grown by k//2 cells, so blur spilling past the
            # object's box survives the paste into the union frame.
            blurred = blur_per_sample(maps, kernels, full=True)
            grown = grow_boxes(grid_boxes, m, k // 2)
            if self.joint_pair_params:
                union = union_boxes(boxes, pair_index).repeat(2, 1)
                pair = resample_to_frames(blurred, grown, union, s).view(2, r, c, s, s)
            else:
                pair = paste_into_union(blurred, boxes, pair_index, s, mask_boxes=grown)
        rel = pair[0] * pair[1]
        return rel.sigmoid() if self.sigmoid_relation_masks else rel


class NoEdgeGrounding(nn.Module):
    """``none``: the union-box feature alone through the same head (no mask channels), the baseline of Table 4.

    num_mask_channels, num_label_classes: part of the common builder call; unused.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_dim: int = 1024,
        out_dim: int = 1024,
        roi_size: int = 28,
        pool_size: int = 7,
        conv_relu: bool = True,
        num_mask_channels: int | None = None,
        num_label_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.head = GroundingHead(in_channels, 0, hidden_dim, out_dim, roi_size, pool_size, conv_relu)

    @property
    def out_dim(self) -> int:
        return self.head.out_dim

    @property
    def symmetric(self) -> bool:
        """Always: the union box, hence its feature, is the same for both orders of a pair."""
        return True

    def forward(
        self,
        union_features: Tensor,
        mask_probs: Tensor | None = None,
        boxes: Tensor | None = None,
        pair_index: Tensor | None = None,
        label_probs: Tensor | None = None,
    ) -> Tensor:
        """Same call as the mask variants; only ``union_features`` (Float[R, D, S, S]) is used (and
        ``pair_index``, when given, to run the head once per unordered pair)."""
        if pair_index is None:
            return self.head(union_features)
        if pair_index.dim() != 2 or pair_index.shape != (union_features.shape[0], 2):
            raise ValueError(
                f"NoEdgeGrounding: `pair_index` must be Long[R, 2] with R = union_features.shape[0] = "
                f"{union_features.shape[0]}, got {tuple(pair_index.shape)}"
            )
        return forward_once_per_unordered_pair(lambda f, _: self.head(f), union_features, pair_index)
