"""A ranking recipe: one TOML file naming everything the PolyMNIST-E ranking study computes.

Tables (docs/ranking.md): ``seed``; ``[cvae]`` (the MNIST CVAE, the keys and defaults of
``mmgen study``'s ``[cvae]``, so that its jobs are shared); ``[polymnist]`` (PolyMNIST-E:
five modalities from one CVAE); ``[multivae]`` (the models and MultiVae's training budget);
``[classifier]`` (the per-modality coherence classifiers); ``[coherence]`` (MultiVae's
``CoherenceEvaluatorConfig``); ``[truth]`` (the ground truth of PolyMNIST-E and its twin,
``mmgen study``'s ``[truth]``); ``[replicates]`` (dataset replicates R, training seeds S nested
in them). Read with ``tomllib`` and validated whole before any work: every mistake is one
line of one ``RecipeError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmgen.errors import UsageError
from mmgen.study.recipe import (
    CVAE_DEFAULTS,
    TRUTH_DEFAULTS,
    RecipeError,
    check_replicates,
    check_top_level,
    read_toml,
    table_of,
    truth_errors,
)

MODALITIES = 5  # MultiVae's MMNISTDataset reads exactly m0 .. m4
MODELS = ("mvae", "mmvae", "mopoe")
SOURCE = "mnist"  # PolyMNIST's digits
DECODE_MODES = ("mean", "sample")

POLYMNIST_DEFAULTS: dict[str, Any] = {
    "n_train": 60_000,
    "n_test": 10_000,
    "decode": "sample",
    "radius": 2.0,
    "truncation": "radial",
    "labels": "grid",
    "backgrounds": [],  # one spec per modality, one for all, or none (scikit-learn's photos)
    "allow_collapsed": False,  # tests and smoke runs only
}
# MultiVae's PolyMNIST benchmark (its MoPoE reproduction script): latent 512, Laplace decoders
# of scale 0.75, β 2.5, 300 epochs of batch 256 at lr 1e-3.
MULTIVAE_DEFAULTS: dict[str, Any] = {
    "models": list(MODELS),
    "epochs": 300,
    "batch_size": 256,
    "lr": 1e-3,
    "latent_dim": 512,
    "beta": 2.5,
    "scale": 0.75,  # the Laplace likelihood's scale
    "mmvae_k": 10,  # MMVAE's importance samples K (MultiVae's default)
    "mvae_warmup": 0,  # MVAE's KL warm-up epochs (MultiVae's default 10)
    "threads": 1,  # torch threads: fixed, so the same bytes
}
CLASSIFIER_DEFAULTS: dict[str, Any] = {"epochs": 30, "batch_size": 256, "lr": 1e-3}
COHERENCE_DEFAULTS: dict[str, Any] = {
    "joint_samples": 10_000,  # nb_samples_for_joint
    "cross_samples": 1,  # nb_samples_for_cross (generations per test tuple)
    "batch_size": 512,
}
REPLICATES_DEFAULTS: dict[str, Any] = {"count": 5, "evaluator_seeds": [0]}
TOP_LEVEL = frozenset(
    {"seed", "cvae", "polymnist", "multivae", "classifier", "coherence", "truth", "replicates"}
)
POSITIVE = {
    "polymnist": ("n_train", "n_test"),
    "multivae": ("epochs", "batch_size", "lr", "latent_dim", "beta", "scale", "mmvae_k",
                 "threads"),
    "classifier": ("epochs", "batch_size", "lr"),
    "coherence": ("joint_samples", "cross_samples", "batch_size"),
}  # fmt: skip


@dataclass(frozen=True)
class RankingRecipe:
    """A validated ranking recipe (``load_ranking_recipe``)."""

    seed: int
    cvae: dict[str, Any]
    polymnist: dict[str, Any]
    multivae: dict[str, Any]
    classifier: dict[str, Any]
    coherence: dict[str, Any]
    truth: dict[str, Any]
    replicates: int
    evaluator_seeds: tuple[int, ...]

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self.multivae["models"])

    def as_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "cvae": dict(self.cvae),
            "polymnist": dict(self.polymnist),
            "multivae": dict(self.multivae),
            "classifier": dict(self.classifier),
            "coherence": dict(self.coherence),
            "truth": dict(self.truth),
            "replicates": {"count": self.replicates, "evaluator_seeds": list(self.evaluator_seeds)},
        }


def load_ranking_recipe(path: Path | str) -> RankingRecipe:
    """Read and validate the TOML recipe at ``path``.

    Raises:
        FileNotFoundError: no such file.
        RecipeError: the file is not TOML, or the recipe has mistakes (one line each).
    """
    return validate_ranking(read_toml(path), str(path))


def validate_ranking(data: Mapping[str, Any], name: str = "recipe") -> RankingRecipe:
    """The recipe of ``data`` (a parsed TOML document), or every mistake in it.

    Raises:
        RecipeError: one line per mistake, prefixed with ``name``.
    """
    errors: list[str] = []
    seed = check_top_level(data, TOP_LEVEL, errors)
    tables = {
        "cvae": table_of(data, "cvae", CVAE_DEFAULTS, errors),
        "polymnist": table_of(data, "polymnist", POLYMNIST_DEFAULTS, errors),
        "multivae": table_of(data, "multivae", MULTIVAE_DEFAULTS, errors),
        "classifier": table_of(data, "classifier", CLASSIFIER_DEFAULTS, errors),
        "coherence": table_of(data, "coherence", COHERENCE_DEFAULTS, errors),
        "truth": table_of(data, "truth", TRUTH_DEFAULTS, errors),
    }
    replicates = table_of(data, "replicates", REPLICATES_DEFAULTS, errors)
    for table, keys in POSITIVE.items():
        for key in keys:
            value = tables[table][key]
            if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
                errors.append(f"{table}.{key} must be > 0, got {value!r}")
    errors += _model_errors(tables["multivae"]["models"])
    errors += [f"truth: {e}" for e in truth_errors(tables["truth"])]
    errors += _library_errors(tables)
    count, seeds = check_replicates(replicates, errors)
    if errors:
        raise RecipeError([f"{name}: {e}" for e in errors])
    return RankingRecipe(
        seed=seed,
        cvae=tables["cvae"],
        polymnist={**tables["polymnist"], "backgrounds": list(tables["polymnist"]["backgrounds"])},
        multivae={**tables["multivae"], "models": list(tables["multivae"]["models"])},
        classifier=tables["classifier"],
        coherence=tables["coherence"],
        truth=tables["truth"],
        replicates=count,
        evaluator_seeds=tuple(sorted(seeds)),
    )


def _model_errors(models: Any) -> list[str]:
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        return [f"multivae.models must be a list of model names, got {models!r}"]
    errors = [
        f"multivae.models: unknown model {m!r}; choose from {', '.join(MODELS)}"
        for m in models
        if m not in MODELS
    ]
    if len(set(models)) != len(models):
        errors.append(f"multivae.models lists a model more than once: {models}")
    elif len(models) < 2:
        errors.append(f"multivae.models must name two or more models to rank, got {models}")
    return errors


def _library_errors(tables: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The library configs' own refusals of ``[cvae]`` and ``[polymnist]`` (one line each)."""
    from mmgen import polymnist
    from mmgen.study import steps

    errors = []
    poly = tables["polymnist"]
    checks = [
        lambda: steps.cvae_configs({"cvae": tables["cvae"]}),
        lambda: polymnist.resolve_specs(list(poly["backgrounds"]), MODALITIES),
    ]
    if poly["decode"] not in DECODE_MODES:  # generate's config names only its first mistake
        errors.append(
            f"polymnist.decode must be one of {', '.join(DECODE_MODES)}, got {poly['decode']!r}"
        )
    elif all(isinstance(poly[k], int) and poly[k] > 0 for k in ("n_train", "n_test")):
        checks.append(lambda: steps.generate_config({"generate": poly}))
    for check in checks:
        try:
            check()
        except UsageError as error:
            errors.append(" ".join(str(error).split()))
        except (TypeError, ValueError) as error:
            errors.append(str(error))
    return errors
