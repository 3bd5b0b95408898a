"""Evaluation of frozen representations: linear probe, kNN, per-domain accuracy, few-shot and transfer."""

from replens.evaluate.fewshot import few_shot_accuracy, sample_k_shot, transfer_evaluation
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
    "few_shot_accuracy",
    "fit_linear_probe",
    "knn_predict",
    "sample_k_shot",
    "transfer_evaluation",
]
