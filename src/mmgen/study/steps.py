"""The study's only calls into the pipeline: train a CVAE, generate, shuffle, pair, evaluate.

Every other study module goes through these functions, so that a change of the library's
commands (evaluate split into modules, ``shuffle --fraction``) is re-pointed here and nowhere
else. Each takes the recipe's settings (plain dicts, ``mmgen.study.recipe``) and a seed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mmgen import truth as ground_truth
from mmgen.cvae_training import train_cvae
from mmgen.data.h5io import read_split
from mmgen.distributed import World
from mmgen.errors import UsageError
from mmgen.evaluate import EvaluateConfig, check_models, evaluate_datasets
from mmgen.generate import GenerateConfig, generate_dataset
from mmgen.models.cvae import CVAEConfig
from mmgen.models.registry import MODELS
from mmgen.pair import PairConfig, pair_sources
from mmgen.pixel_baseline import pixel_baseline
from mmgen.shuffle import MixConfig, mix_modality
from mmgen.subsets import marginal_keeping_rows
from mmgen.train import TrainConfig

log = logging.getLogger(__name__)


def cvae_configs(tables: Mapping[str, Any], seed: int = 0) -> tuple[CVAEConfig, TrainConfig]:
    """The CVAE's architecture and training configs of a recipe's ``[cvae]``."""
    cvae = tables["cvae"]
    model = CVAEConfig(latent_dim=cvae["latent_dim"], beta=cvae["beta"])
    train = TrainConfig(
        epochs=cvae["epochs"], batch_size=cvae["batch_size"], lr=cvae["lr"], seed=seed
    )
    if cvae["limit"] is not None and cvae["limit"] <= 0:
        raise ValueError(f"cvae.limit must be > 0, got {cvae['limit']}")
    return model, train


def train_cvae_step(
    out: Path,
    source: str,
    tables: Mapping[str, Any],
    seed: int,
    data_dir: Path | str | None,
    device: str,
    resume: bool,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> None:
    """Train (or resume) one CVAE of ``source`` with ``seed`` into ``out``."""
    model, train = cvae_configs(tables, seed)
    train_cvae(
        out,
        source,
        model,
        train,
        data_dir=data_dir,
        limit=tables["cvae"]["limit"],
        device=device,
        resume=resume,
        on_step=on_step,
    )


def generate_config(tables: Mapping[str, Any], seed: int = 0) -> GenerateConfig:
    """``[generate]`` as ``generate``'s config, with ``seed``."""
    g = tables["generate"]
    return GenerateConfig(
        n_train=g["n_train"],
        n_test=g["n_test"],
        radius=float(g["radius"]),
        truncation=g["truncation"],
        decode=g["decode"],
        labels=g["labels"],
        seed=seed,
    )


def generate_step(
    cvaes: Sequence[Path], out: Path, tables: Mapping[str, Any], seed: int, device: str
) -> None:
    """Generate the entangled file ``out`` from the replicate's CVAEs (one per source)."""
    generate_dataset(
        list(cvaes),
        out,
        generate_config(tables, seed),
        device=device,
        overwrite=True,
        allow_collapsed=tables["generate"].get("allow_collapsed", False),
    )


def mix_step(
    parent: Path, out: Path, modality: str, fraction: float, seed: int, block_codes: int
) -> None:
    """The twin of ``parent`` with ``fraction`` of its tuples' ``modality`` shuffled per class,
    within blocks of ``block_codes`` codes (so that whole-block subsets keep the marginals)."""
    config = MixConfig(modality=modality, seed=seed, fraction=fraction, block_codes=block_codes)
    mix_modality(parent, out, config, overwrite=True)


def truth_settings(tables: Mapping[str, Any]) -> ground_truth.Settings:
    """``[truth]`` as the oracle's settings (its own refusals: ``UsageError``)."""
    t = tables["truth"]
    return ground_truth.Settings(method=t["method"], points=t["points"], samples=t["samples"])


def truth_step(
    paths: Sequence[Path], tables: Mapping[str, Any], device: str
) -> list[dict[str, Any]]:
    """Compute and store the truth of ``paths`` (one replicate's generated files, all from the
    same CVAEs); returns each file's summary (docs/truth.md §5).

    The study's one call into the oracle: ``ensure_truths`` (several files of the same CVAEs
    decoded once) when the oracle has it, else ``ensure_truth`` file by file; both store the
    per-tuple values beside each file (``<file>.truth.h5``). A decoded-means file
    (``decode = "mean"``) has no finite truth: its summary (the entropy floor) is computed and
    returned only, not stored.
    """
    settings = truth_settings(tables)
    if tables["generate"]["decode"] != "sample":
        return [ground_truth.compute_truth(path, settings, device).summary for path in paths]
    batched = getattr(ground_truth, "ensure_truths", None)
    if batched is not None:
        truths = batched(list(paths), settings, device=device)
    else:
        truths = [ground_truth.ensure_truth(path, settings, device=device) for path in paths]
    return [truth.summary for truth in truths]


def load_truth(path: Path) -> ground_truth.Truth | None:
    """The stored truth of a generated file (``None``: none, or stale)."""
    return ground_truth.load_truth(path)


def subset_rows(
    paths: Sequence[Path], tables: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``[evaluate]`` with ``limit``/``test_limit`` moved to counts that keep the marginals.

    ``paths``: the entangled file and its twins (not the naive pairing). When the recipe asks
    for fewer rows than a split, ``mmgen.subsets.marginal_keeping_rows`` gives the count whose
    leading rows hold the same images per unmixed modality and the same multiset per mixed one
    in every file; ``twins.subset = "shrink"`` takes the largest such count below the asked
    one, ``"refuse"`` raises ``UsageError``.

    Returns:
        (the evaluate table to run, ``{"train": …, "test": …}`` each ``{"asked", "used"}``
        or ``None`` for a whole split, and ``"notes"``).
    """
    evaluate = dict(tables["evaluate"])
    shrink = tables["twins"]["subset"] == "shrink"
    asked = {
        "train": evaluate["limit"],
        "test": evaluate["limit"] if evaluate["test_limit"] is None else evaluate["test_limit"],
    }
    record: dict[str, Any] = {"notes": []}
    for split, n in asked.items():
        if n is None:
            record[split] = None
            continue
        used = marginal_keeping_rows(paths, n, split, shrink=shrink)
        record[split] = {"asked": n, "used": used}
        if used != n and used < _split_size(paths[0], split, n):
            record["notes"].append(
                f"{split}: the first {n} rows split a permutation block; {used} rows keep the "
                'marginals of E and its twins (twins.subset = "shrink")'
            )
    evaluate["limit"] = None if record["train"] is None else record["train"]["used"]
    evaluate["test_limit"] = None if record["test"] is None else record["test"]["used"]
    return evaluate, record


def _split_size(path: Path, split: str, n: int) -> int:
    return len(read_split(path, split, n).labels)


def pixel_baseline_step(path: Path, train_rows: int | None, test_rows: int | None) -> dict:
    """The model-free latent recovery (per-class kNN on raw pixels) of ``path``'s rows."""
    try:
        train, test = read_split(path, "train", train_rows), read_split(path, "test", test_rows)
        return pixel_baseline(train, test)
    except ValueError as error:  # a file without true codes
        raise UsageError(str(error)) from None


def pair_config(tables: Mapping[str, Any], seed: int = 0) -> PairConfig:
    """The naive pairing's config: the recipe's sources and ``twins.naive_limit``."""
    return PairConfig(
        sources=tuple(tables["sources"]), seed=seed, limit=tables["twins"]["naive_limit"]
    )


def pair_step(out: Path, tables: Mapping[str, Any], seed: int, data_dir: Path | str | None) -> None:
    """The naive pairing of real images ``out``."""
    pair_sources(out, pair_config(tables, seed), data_dir=data_dir, overwrite=True)


def evaluate_config(
    tables: Mapping[str, Any], seeds: Sequence[int] = (0,), device: str = "auto"
) -> EvaluateConfig:
    """``[evaluate]`` as evaluate's config, with the evaluator ``seeds``."""
    e = dict(tables["evaluate"])
    return EvaluateConfig(models=tuple(e.pop("models")), seeds=tuple(seeds), device=device, **e)


def check_evaluate_models(tables: Mapping[str, Any]) -> None:
    """Refuse a model name that evaluate's registry lacks."""
    check_models(tables["evaluate"]["models"], MODELS)


def evaluate_step(
    paths: Sequence[Path],
    out: Path,
    tables: Mapping[str, Any],
    seeds: Sequence[int],
    data_dir: Path | str | None,
    cache_dir: Path | str | None,
    device: str,
    world: World,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, Any] | None:
    """Evaluate ``paths`` side by side into ``out`` (its report on rank 0, else ``None``).

    The one place the study calls evaluation: ``evaluate``'s own jobs make it resumable and
    share its (file, model, seed) jobs among torchrun's ranks.
    """
    return evaluate_datasets(
        paths,
        out,
        evaluate_config(tables, seeds, device),
        data_dir=data_dir,
        cache_dir=cache_dir,
        on_step=on_step,
        overwrite=True,  # jobs whose key matches are reused; others of this folder are stale
        world=world,
    )


def evaluated_figures(
    report: Mapping[str, Any], dataset: str, model: str, seed: int
) -> Mapping[str, Any]:
    """One job's figures in an evaluate report."""
    return report["datasets"][dataset]["seeds"][str(seed)][model]


def report_path(out: Path) -> Path:
    """Where ``evaluate`` writes its report in ``out`` (written last: it marks completion)."""
    return out / "report.json"
