"""FALCON (``replens.explain``): explain features and feature groups in words (paper chapter 4).

Pieces, each usable alone:

* :mod:`~replens.explain.bank`: caption banks (build, import LAION-style
  shards, exact streamed global-softmax search, optional faiss index);
* :mod:`~replens.explain.activations`: thresholds, feature groups
  (Algorithm 1), lowly activating counterfactuals (Eq. 4.2);
* :mod:`~replens.explain.gradcam`: Grad-CAM crops with pytorch-grad-cam;
* :mod:`~replens.explain.concepts`: spaCy concept extraction, Word Score
  (Eq. 4.1), contrastive filtering;
* :mod:`~replens.explain.falcon`: the method (:class:`Falcon`);
* :mod:`~replens.explain.pipeline`: :func:`explain`, FALCON with failures and transfer in one call,
  returning :class:`Explanations` (``.save(dir)`` / ``.load(dir)``);
* :mod:`~replens.explain.failures`: explanations of mis-classifications (section 4.5);
* :mod:`~replens.explain.transfer`: concept transfer between models (section 4.6, Eq. 4.3);
* :mod:`~replens.explain.ground_truth`: precision/recall against the world's truth;
* :mod:`~replens.explain.outputs`: JSON, CSV and the HTML page;
* :mod:`~replens.explain.stats`: concept statistics across models (appendix B.1, B.3);
* :mod:`~replens.explain.layers`: intermediate-layer encoders for FALCON (appendix B.6).

Typical use::

    from replens.explain import explain

    found = explain(backbone, "world:runs/world?split=test")    # the tiny CLIP and the world caption bank
    found.save("runs/explain")

or piece by piece::

    from replens.explain import Falcon, FalconConfig, default_world_bank
    from replens.vl import load_vl_model

    vl = load_vl_model()
    bank = default_world_bank(vl)
    result = Falcon(backbone, probe_source, vl, bank, FalconConfig()).run()
"""

from replens.explain.activations import (
    activation_threshold,
    feature_groups,
    highly_activating,
    lowly_activating,
    normalize_rows,
    single_feature_sets,
)
from replens.explain.bank import (
    BankError,
    CaptionBank,
    SearchResult,
    build_bank,
    default_world_bank,
    import_embedding_shards,
    open_bank,
    read_caption_file,
    world_caption_texts,
)
from replens.explain.concepts import (
    DEFAULT_DISCARD_WORDS,
    CaptionTerms,
    ConceptExtractor,
    contrastive_filter,
    rank_terms,
    word_scores,
)
from replens.explain.failures import FailureExplanation, contributions, explain_failures, linear_head_from_probe
from replens.explain.falcon import Falcon, FalconConfig, FalconResult, GroupExplanation, compute_representations
from replens.explain.gradcam import (
    FeatureGroupTarget,
    cam_boxes,
    crop_images,
    group_cams,
    largest_region_box,
    last_stage_blocks,
    resize_crops,
)
from replens.explain.ground_truth import (
    concept_presence,
    contrastive_filter_report,
    failure_spurious_report,
    ground_truth_terms,
    is_pattern_world,
    precision_recall_at_k,
    source_concepts,
)
from replens.explain.layers import LayerRepresentation
from replens.explain.outputs import write_concepts_csv, write_failures, write_falcon_outputs, write_html_report
from replens.explain.pipeline import Explanations, explain
from replens.explain.stats import (
    concept_statistics,
    group_concepts,
    group_size_distribution,
    highly_activating_feature_share,
    shared_concepts,
    unshared_concepts,
)
from replens.explain.transfer import (
    TransferredGroup,
    carry_rate,
    learn_transfer,
    map_features,
    target_highly_activating,
    transfer_concepts,
)

__all__ = [
    "DEFAULT_DISCARD_WORDS",
    "BankError",
    "CaptionBank",
    "CaptionTerms",
    "ConceptExtractor",
    "Explanations",
    "FailureExplanation",
    "Falcon",
    "FalconConfig",
    "FalconResult",
    "FeatureGroupTarget",
    "GroupExplanation",
    "LayerRepresentation",
    "SearchResult",
    "TransferredGroup",
    "activation_threshold",
    "build_bank",
    "cam_boxes",
    "carry_rate",
    "compute_representations",
    "concept_presence",
    "concept_statistics",
    "contrastive_filter",
    "contrastive_filter_report",
    "contributions",
    "crop_images",
    "default_world_bank",
    "is_pattern_world",
    "explain",
    "explain_failures",
    "failure_spurious_report",
    "feature_groups",
    "ground_truth_terms",
    "group_cams",
    "group_concepts",
    "group_size_distribution",
    "highly_activating",
    "highly_activating_feature_share",
    "import_embedding_shards",
    "largest_region_box",
    "last_stage_blocks",
    "learn_transfer",
    "linear_head_from_probe",
    "lowly_activating",
    "map_features",
    "normalize_rows",
    "open_bank",
    "precision_recall_at_k",
    "rank_terms",
    "read_caption_file",
    "resize_crops",
    "shared_concepts",
    "single_feature_sets",
    "source_concepts",
    "target_highly_activating",
    "transfer_concepts",
    "unshared_concepts",
    "word_scores",
    "world_caption_texts",
    "write_concepts_csv",
    "write_failures",
    "write_falcon_outputs",
    "write_html_report",
]
