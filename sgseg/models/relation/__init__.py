"""Stage-2 relation head: pair sampling, frequency bias, the relation predictor and the L_sg losses."""

from sgseg.models.relation.frequency import FrequencyBias, log_predicate_distribution
from sgseg.models.relation.losses import object_loss, relation_loss, tree_score_loss, tree_score_targets
from sgseg.models.relation.predictor import RelationPredictor
from sgseg.models.relation.sampling import all_pairs, sample_gt_pairs, sample_sgdet_pairs

__all__ = [
    "FrequencyBias",
    "RelationPredictor",
    "all_pairs",
    "log_predicate_distribution",
    "object_loss",
    "relation_loss",
    "sample_gt_pairs",
    "sample_sgdet_pairs",
    "tree_score_loss",
    "tree_score_targets",
]
