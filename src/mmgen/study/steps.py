"""The study's only calls into the pipeline: train a CVAE, generate, shuffle, pair, evaluate.

Every other study module goes through these functions, so that a change of the library's
commands (evaluate split into modules, ``shuffle --fraction``) is re-pointed here and nowhere
else. Each takes the recipe's settings (plain dicts, ``mmgen.study.recipe``) and a seed.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mmgen.cvae_training import train_cvae
from mmgen.distributed import World
from mmgen.evaluate import EvaluateConfig, check_models, evaluate_datasets, model_registry
from mmgen.generate import GenerateConfig, generate_dataset
from mmgen.models.cvae import CVAEConfig
from mmgen.shuffle import MixConfig, PairConfig, mix_modality, pair_sources
from mmgen.train import TrainConfig

log = logging.getLogger(__name__)

# Partial twins need shuffle's ``fraction`` (the ground-truth issue). Asked of the API, so that
# recipes with fractions work as soon as MixConfig has the field.
SHUFFLE_HAS_FRACTION = "fraction" in {f.name for f in dataclasses.fields(MixConfig)}


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
    generate_dataset(list(cvaes), out, generate_config(tables, seed), device=device, overwrite=True)


def mix_step(parent: Path, out: Path, modality: str, fraction: float, seed: int) -> None:
    """The twin of ``parent`` with ``fraction`` of its tuples' ``modality`` shuffled per class."""
    extra = {"fraction": fraction} if SHUFFLE_HAS_FRACTION else {}
    if fraction != 1.0 and not SHUFFLE_HAS_FRACTION:  # the recipe refuses this before any work
        raise RuntimeError("partial twins need MixConfig.fraction")
    mix_modality(parent, out, MixConfig(modality=modality, seed=seed, **extra), overwrite=True)


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
    check_models(tables["evaluate"]["models"], model_registry()[0])


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
