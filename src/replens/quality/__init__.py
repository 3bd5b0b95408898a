"""Representation quality (paper chapter 3): discriminative features, Q-Score, failure prediction,
compression, peer metrics, Q-Score regularised fine-tuning and saliency IoU.

The whole pipeline in one call (what ``replens qscore`` runs)::

    from replens.quality import score

    report = score("runs/emb-train", test="runs/emb-test", labels=True, eps=2.0)
    report.save("runs/qscore")                                           # QScoreReport.load reads it back

The pieces::

    from replens.quality import qscore_embeddings, failure_prediction, probe_correctness

    train, chunks = qscore_embeddings("runs/emb-train")                   # D from the train split
    test, test_chunks = qscore_embeddings("runs/emb-test", discriminative=train.discriminative)
    test.scores                                                          # Eq. 3.1 per sample

Heavy dependencies (scikit-learn, matplotlib, pytorch-grad-cam) are imported
only by the functions that need them.
"""

from replens.quality.analysis import (
    ProjectedRepresentation,
    QualityAssessment,
    activation_bands,
    assess_quality,
    class_activation_share,
    class_feature_means,
    highly_activating_matrix,
    prediction_confidence,
    representation_sparsity,
)
from replens.quality.compression import DEFAULT_FRACTIONS, band_for_fraction, compression_curve, compression_series
from replens.quality.failure import FailureReport, failure_prediction, probe_correctness, rank_failures
from replens.quality.pipeline import QScoreConfig, QScoreReport, score
from replens.quality.qscore import (
    DEFAULT_BAND,
    DEFAULT_EPS,
    EmbeddingChunks,
    NonFiniteRowsError,
    QScoreResult,
    QScoreStream,
    band_features,
    eps_for_dim,
    feature_order,
    iter_row_blocks,
    load_feature_sets,
    qscore_array,
    qscore_embeddings,
    qscore_model,
    tail_features,
)
from replens.quality.regularizer import (
    LassoRegularizer,
    QScoreRegularizer,
    highly_activating_mask,
    qscore_regularizer_terms,
)
from replens.quality.saliency import (
    DiscriminativeTarget,
    SaliencyResult,
    SalientImageNetSource,
    discriminative_cams,
    heat_iou,
    saliency_iou,
)
from replens.quality.spectrum import alpha_req, covariance_eigenvalues, rankme, spectrum_metrics

__all__ = [
    "DEFAULT_BAND",
    "DEFAULT_EPS",
    "eps_for_dim",
    "DEFAULT_FRACTIONS",
    "DiscriminativeTarget",
    "EmbeddingChunks",
    "FailureReport",
    "LassoRegularizer",
    "NonFiniteRowsError",
    "ProjectedRepresentation",
    "QScoreConfig",
    "QScoreRegularizer",
    "QScoreReport",
    "QScoreResult",
    "QScoreStream",
    "QualityAssessment",
    "SaliencyResult",
    "SalientImageNetSource",
    "activation_bands",
    "alpha_req",
    "assess_quality",
    "band_for_fraction",
    "band_features",
    "class_activation_share",
    "class_feature_means",
    "compression_curve",
    "compression_series",
    "covariance_eigenvalues",
    "discriminative_cams",
    "failure_prediction",
    "feature_order",
    "heat_iou",
    "highly_activating_mask",
    "highly_activating_matrix",
    "iter_row_blocks",
    "load_feature_sets",
    "prediction_confidence",
    "probe_correctness",
    "qscore_array",
    "qscore_embeddings",
    "qscore_model",
    "qscore_regularizer_terms",
    "rank_failures",
    "rankme",
    "representation_sparsity",
    "saliency_iou",
    "score",
    "spectrum_metrics",
    "tail_features",
]
