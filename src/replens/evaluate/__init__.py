"""Evaluation of frozen representations: linear probe, kNN, per-domain accuracy."""

from replens.evaluate.probe import (
    Accuracy,
    LinearProbe,
    accuracy_report,
    evaluate_representations,
    fit_linear_probe,
    knn_predict,
)

__all__ = [
    "Accuracy",
    "LinearProbe",
    "accuracy_report",
    "evaluate_representations",
    "fit_linear_probe",
    "knn_predict",
]
