"""Accuracy, as an `evaluate` metric module that ships with MergeLab (works offline)."""

import datasets
import evaluate


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Fraction of predictions equal to the reference.",
            citation="",
            inputs_description="predictions, references: lists of ints",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        total = len(references)
        right = sum(int(p == r) for p, r in zip(predictions, references))
        return {"accuracy": right / total if total else 0.0}
