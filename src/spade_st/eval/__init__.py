"""Evaluation: gene-expression prediction, few-shot probes, ABMIL and survival models, the her2st benchmark,
HEST-Benchmark on its own folders and task manifests (``spade-st evaluate``). Submodules load on first use."""

from .._lazy import lazy

_EXPORTS = {
    "few_shot": "fewshot",
    "run_task": "tasks",
    "load_task": "tasks",
    "Her2stBenchConfig": "her2st_bench",
    "run_her2st_bench": "her2st_bench",
    "HestBenchConfig": "hest_bench",
    "run_hest_bench": "hest_bench",
    "abmil_cv": "mil",
    "train_survival_abmil": "survival",
    "c_index": "survival",
    "cross_modal": "retrieval",
    "expert_islands": "islands",
    "gene_target": "genes",
    "hest_ridge": "genes",
    "ridge_cv": "genes",
    "mean_ci": "stats",
}
_SUBMODULES = {
    "fewshot",
    "gene_folds",
    "genes",
    "her2st_bench",
    "hest_bench",
    "hest_files",
    "islands",
    "mil",
    "retrieval",
    "stats",
    "survival",
    "tasks",
}
__all__ = sorted(_EXPORTS) + sorted(_SUBMODULES)
__getattr__ = lazy(__name__, _EXPORTS, _SUBMODULES)
