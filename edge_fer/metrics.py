"""Classification metrics in numpy (no torch, no sklearn)."""

from __future__ import annotations

import numpy as np


def classification_report(probs: np.ndarray, labels: np.ndarray, classes) -> dict:
    """accuracy, top-2 accuracy, macro F1, per-class precision/recall/f1/support, confusion."""
    c = len(classes)
    pred = probs.argmax(1)
    n = int(labels.shape[0])
    cm = np.zeros((c, c), np.int64)
    np.add.at(cm, (labels, pred), 1)
    top2 = np.argsort(-probs, axis=1)[:, :2]
    per_class = {}
    f1s = []
    for i, name in enumerate(classes):
        tp = cm[i, i]
        support = int(cm[i].sum())
        predicted = int(cm[:, i].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": support,
        }
        if support:
            f1s.append(f1)
    return {
        "n": n,
        "labels": list(classes),
        "accuracy": float((pred == labels).mean()) if n else 0.0,
        "top2_accuracy": float((top2 == labels[:, None]).any(1).mean()) if n else 0.0,
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }
