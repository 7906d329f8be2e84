"""Several seeds of one configuration: per-epoch mean and spread, and where the reference falls."""

import math
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional

import torch

from ..config import TrainConfig
from ..history import HISTORY_KEYS, History, format_figure
from ..training.progress import Progress
from .reference import reference_history
from ..training.run import run_training


def run_seeds(config: TrainConfig, seeds: List[int], data_root: Path, device: torch.device, out_dir: Path,
              progress: Optional[Progress] = None) -> List[History]:
    """One full run per seed, each checkpointed as ``out_dir/seed<N>.pt``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [run_training(replace(config, seed=seed), data_root, device, out_dir / f"seed{seed}.pt",
                         progress=progress).history for seed in seeds]


def summarize(histories: List[History]) -> Dict[str, Dict[str, list]]:
    """Per metric and epoch, the mean and sample standard deviation over the runs."""
    summary = {}
    for key in HISTORY_KEYS:
        per_epoch = list(zip(*(history[key] for history in histories)))
        summary[key] = {"mean": [statistics.fmean(values) for values in per_epoch],
                        "std": [statistics.stdev(values) if len(values) > 1 else 0.0 for values in per_epoch]}
    return summary


def reference_z_scores(summary: Dict[str, Dict[str, list]], first_epoch: int = 2) -> Dict[str, float]:
    """How far the reference's logged figures sit from our runs, in our standard deviations.

    For each metric, the mean over epochs ``first_epoch``..20 of
    ``|reference - our mean| / our std``; epochs the reference did not log
    are skipped. Epoch 1 is left out by default: no measured Keras matches
    the reference's first epoch (docs/faithfulness.md).
    """
    reference = reference_history()
    scores = {}
    for key in HISTORY_KEYS:
        z = [abs(ref - mean) / std
             for epoch, (ref, mean, std) in enumerate(zip(reference[key], summary[key]["mean"],
                                                          summary[key]["std"]), start=1)
             if epoch >= first_epoch and ref is not None and std > 0]
        scores[key] = statistics.fmean(z) if z else math.nan
    scores["all"] = statistics.fmean(scores[key] for key in HISTORY_KEYS)
    return scores


def final_position(histories: List[History]) -> Dict[str, Dict[str, float]]:
    """Where the reference's epoch-20 figures fall among our runs' epoch-20 figures.

    For each metric: the fraction of our runs below the reference's value, and
    its distance from our mean in our standard deviations (signed).
    """
    reference = reference_history()
    position = {}
    for key in HISTORY_KEYS:
        ours = [history[key][-1] for history in histories]
        epochs = len(histories[0][key])
        ref = reference[key][epochs - 1] if epochs <= len(reference[key]) else None
        if ref is None:
            continue
        spread = statistics.stdev(ours) if len(ours) > 1 else 0.0
        position[key] = {"reference": ref, "fraction_of_runs_below": sum(v < ref for v in ours) / len(ours),
                         "z": (ref - statistics.fmean(ours)) / spread if spread else math.nan}
    return position


def summary_table(summary: Dict[str, Dict[str, list]]) -> str:
    """Markdown: per epoch, each metric as mean ± std beside the reference's figure."""
    reference = reference_history()
    rows = ["| epoch | " + " | ".join(f"{key} | ref" for key in HISTORY_KEYS) + " |",
            "|---|" + "---|---|" * len(HISTORY_KEYS)]
    for i in range(len(summary["loss"]["mean"])):
        cells = []
        for key in HISTORY_KEYS:
            mean, std = summary[key]["mean"][i], summary[key]["std"][i]
            ref = reference[key][i] if i < len(reference[key]) else None
            cells.append(f"{format_figure(mean)} ± {std:.2g} | {format_figure(ref)}")
        rows.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
