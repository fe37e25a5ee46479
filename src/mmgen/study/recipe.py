"""A study recipe: one TOML file naming everything a replicated study computes (docs/study.md).

A recipe names the sources, the CVAE settings, ``generate``'s settings, the twins of the
entangled file (the mixed twin ME, partial fractions, the naive pairing), ``evaluate``'s
settings, the replicates (dataset replicates R × evaluator seeds S), the primary figure declared
before the run, and sweeps (one factor at a time around the recipe's own values). It is read
with the standard ``tomllib`` and validated as a whole before any work: every mistake is one
line of one ``UsageError`` (``validate`` collects them all), so a user fixes them in one pass.

Replicate r derives all its seeds from the study seed by keyed streams (``replicate_seed``):
its CVAEs' training seeds, the generate seed, the shuffle and pair seeds (docs/method.md).
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmgen import rng
from mmgen.errors import UsageError

# The tables of a recipe and the keys each accepts, with their defaults (None: the library's).
CVAE_DEFAULTS: dict[str, Any] = {
    "epochs": 100,  # the released MNIST-E's
    "beta": None,  # None: 4 per 784 pixel values (mmgen.models.cvae.default_beta)
    "limit": None,  # train/test examples per source; None: all
    "latent_dim": 2,
    "batch_size": 128,
    "lr": 1e-3,
}
GENERATE_DEFAULTS: dict[str, Any] = {
    "n_train": 60_000,
    "n_test": 10_000,
    "radius": 2.0,
    "truncation": "radial",
    "decode": "mean",  # mean or sample
    "labels": "grid",
    # decode CVAEs whose posterior collapsed (test KL below mmgen.collapse's threshold) instead
    # of stopping the study: for tests and smoke runs only (such a file is class-only)
    "allow_collapsed": False,
}
TWINS_DEFAULTS: dict[str, Any] = {
    "mixed": True,  # ME: the permuted modality shuffled within each class (fraction 1)
    "fractions": [],  # partial twins: this fraction of the tuples shuffled (ground-truth issue)
    "modality": "",  # the permuted modality; "" means the last one
    "naive": True,  # the naive pairing of real images: descriptive, outside the verdict
    "naive_limit": None,  # real examples per source split read for the pairing
    "block_codes": 256,  # shuffle --block-codes: permutation blocks (subsets keep marginals)
    "subset": "shrink",  # a limit that splits a block: "shrink" it (noted) or "refuse"
}
# The ground truth of every generated file (mmgen.truth.Settings; docs/truth.md).
TRUTH_DEFAULTS: dict[str, Any] = {
    "enabled": True,  # compute the truth of E and every twin (sidecars beside the files)
    "method": "auto",  # auto (quadrature for d <= 2), quadrature or importance
    "points": 128,  # quadrature cells per axis (the error check uses 2 x points)
    "samples": 20_000,  # importance draws from the truncated prior (d > 2)
}
SUBSET_POLICIES = ("shrink", "refuse")
EVALUATE_DEFAULTS: dict[str, Any] = {
    "models": ["jmvae", "jmvae-zero", "jmvae-kl", "tvae", "m2vae"],
    "epochs": 100,
    "batch_size": 128,
    "lr": 1e-3,
    "k": 1000,
    "prior_samples": 5000,
    "joint_samples": 10_000,
    "elbo_samples": 10,
    "jsd_samples": 64,
    "limit": None,
    "test_limit": None,
    "classifier_epochs": 3,
    "latent_dim": 2,  # the multi-modal VAEs' latent size (evaluate --latent-dim)
    "threads": 1,  # torch threads per evaluate job (evaluate --threads): fixed, so the same bytes
}
REPLICATES_DEFAULTS: dict[str, Any] = {"count": 5, "evaluator_seeds": [0, 1]}
# Torch CPU threads of every CVAE, generate, pair, mix and truth job (evaluate has its own):
# fixed, because a CPU reduction's float result depends on the thread count (a CVAE trained
# at 1 thread and at 2 differs), so the study's bytes do not depend on torchrun's one thread
# per rank nor on the machine's cores. 2: what the committed results' jobs ran with.
DEFAULT_THREADS = 2
TOP_LEVEL = frozenset(
    {
        "seed", "sources", "primary", "threads", "cvae", "generate", "twins", "evaluate",
        "truth", "replicates", "sweep",
    }
)  # fmt: skip
SWEPT_TABLES = {"cvae": CVAE_DEFAULTS, "generate": GENERATE_DEFAULTS, "evaluate": EVALUATE_DEFAULTS}
# Factors that are budgets: the report marks a figure "not converged" along them.
BUDGET_FACTORS = frozenset({"evaluate.epochs", "cvae.epochs", "evaluate.k"})
# The primary figure the method asks for (docs/method.md): the recovered fraction of the true
# E − ME gap (mmgen.study.calibration), declared before the run.
DEFAULT_PRIMARY = "recovered fraction"


class RecipeError(UsageError):
    """Every mistake of a recipe, one line each (``mistakes``)."""

    def __init__(self, mistakes: list[str]) -> None:
        super().__init__("\n".join(mistakes))
        self.mistakes = list(mistakes)


@dataclass(frozen=True)
class Sweep:
    """One factor varied over values, the other settings at the recipe's own."""

    factor: str  # "<table>.<key>", e.g. "evaluate.epochs"
    values: tuple[Any, ...]

    @property
    def is_budget(self) -> bool:
        return self.factor in BUDGET_FACTORS


@dataclass(frozen=True)
class Recipe:
    """A validated recipe (``load_recipe``); ``as_dict`` is what the study folder records."""

    seed: int
    sources: tuple[str, ...]
    primary: str
    cvae: dict[str, Any]
    generate: dict[str, Any]
    twins: dict[str, Any]
    evaluate: dict[str, Any]
    truth: dict[str, Any]
    replicates: int
    evaluator_seeds: tuple[int, ...]
    sweeps: tuple[Sweep, ...] = field(default_factory=tuple)
    threads: int = DEFAULT_THREADS

    def as_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "sources": list(self.sources),
            "primary": self.primary,
            "threads": self.threads,
            "cvae": dict(self.cvae),
            "generate": dict(self.generate),
            "twins": dict(self.twins),
            "evaluate": dict(self.evaluate),
            "truth": dict(self.truth),
            "replicates": {"count": self.replicates, "evaluator_seeds": list(self.evaluator_seeds)},
            "sweep": [{"factor": s.factor, "values": list(s.values)} for s in self.sweeps],
        }

    def with_override(self, factor: str | None, value: Any) -> Recipe:
        """This recipe with ``factor`` (``"table.key"``) set to ``value`` (None: unchanged)."""
        if factor is None:
            return self
        table, key = factor.split(".", 1)
        return dataclasses.replace(self, **{table: {**getattr(self, table), key: value}})


def replicate_seed(study_seed: int, replicate: int, *key: str | int) -> int:
    """The seed of one draw of replicate ``replicate``: ``key_entropy(seed, "replicate", r, …)``.

    E.g. ``("cvae", "mnist")``, ``("generate",)``, ``("shuffle", fraction_tag)``, ``("pair",)``:
    every replicate and every draw its own stream, the same whatever else the recipe holds.
    """
    return rng.key_entropy(study_seed, "replicate", replicate, *key)


def load_recipe(path: Path | str) -> Recipe:
    """Read and validate the TOML recipe at ``path``.

    Raises:
        FileNotFoundError: no such file.
        UsageError: the file is not TOML, or the recipe has mistakes (one line each).
    """
    return validate(read_toml(path), str(path))


def read_toml(path: Path | str) -> dict[str, Any]:
    """The TOML document at ``path`` (``RecipeError`` when it is not TOML)."""
    path = Path(path)
    with open(path, "rb") as handle:
        try:
            return tomllib.load(handle)
        except tomllib.TOMLDecodeError as error:
            raise RecipeError([f"{path} is not valid TOML: {error}"]) from None


def check_top_level(data: Mapping[str, Any], keys: set[str], errors: list[str]) -> int:
    """Append the unknown top-level keys and a bad ``seed`` to ``errors``; the seed (0 if bad)."""
    for key in sorted(set(data) - keys):
        errors.append(f"unknown top-level key {key!r}; the keys are {', '.join(sorted(keys))}")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        errors.append(f"seed must be an integer in 0 .. 2**63-1, got {seed!r}")
        seed = 0
    return seed


def validate(data: Mapping[str, Any], name: str = "recipe") -> Recipe:
    """The recipe of ``data`` (a parsed TOML document), or every mistake in it.

    Each table is completed with its defaults and checked by the library's own configs (the
    same messages as the commands give), with unknown keys, wrong types and sweep values
    checked too.

    Raises:
        RecipeError: one line per mistake, prefixed with ``name``.
    """
    errors: list[str] = []
    seed = check_top_level(data, TOP_LEVEL, errors)
    sources = data.get("sources", ["mnist", "fashion-mnist"])
    if (
        not isinstance(sources, list)
        or len(sources) < 2
        or not all(isinstance(s, str) for s in sources)
    ):
        errors.append(f"sources must be a list of two or more source names, got {sources!r}")
        sources = ["mnist", "fashion-mnist"]
    elif len(set(sources)) != len(sources):
        errors.append(f"sources lists a source more than once: {sources}")
    threads = data.get("threads", DEFAULT_THREADS)
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 1024:
        errors.append(f"threads must be an integer in 1 .. 1024, got {threads!r}")
        threads = DEFAULT_THREADS
    tables = {
        "cvae": table_of(data, "cvae", CVAE_DEFAULTS, errors),
        "generate": table_of(data, "generate", GENERATE_DEFAULTS, errors),
        "twins": table_of(data, "twins", TWINS_DEFAULTS, errors),
        "evaluate": table_of(data, "evaluate", EVALUATE_DEFAULTS, errors),
        "truth": table_of(data, "truth", TRUTH_DEFAULTS, errors),
    }
    replicates = table_of(data, "replicates", REPLICATES_DEFAULTS, errors)
    count, seeds = check_replicates(replicates, errors)
    from mmgen.study import figures  # the figure names evaluate reports

    primary = data.get("primary", DEFAULT_PRIMARY)
    if primary not in figures.PRIMARY_FIGURES:
        errors.append(
            f"primary {primary!r} is not a figure of the report; choose one of "
            f"{', '.join(repr(f) for f in figures.PRIMARY_FIGURES)}"
        )
    errors += [f"twins: {e}" for e in _twin_errors(tables["twins"])]
    errors += [f"truth: {e}" for e in truth_errors(tables["truth"])]
    if primary == figures.RECOVERED and not tables["truth"]["enabled"]:
        errors.append(
            f"primary {primary!r} needs the ground truth: set [truth] enabled = true, or "
            "declare another primary figure"
        )
    base_errors = _settings_errors(tables, list(sources), "")
    errors += base_errors
    sweeps = _sweeps(data.get("sweep", []), tables, list(sources), errors, set(base_errors))
    if errors:
        raise RecipeError([f"{name}: {e}" for e in errors])
    return Recipe(
        seed=seed,
        sources=tuple(sources),
        primary=primary,
        threads=threads,
        cvae=tables["cvae"],
        generate=tables["generate"],
        twins=tables["twins"],
        evaluate={**tables["evaluate"], "models": list(tables["evaluate"]["models"])},
        truth=tables["truth"],
        replicates=count,
        evaluator_seeds=tuple(sorted(seeds)),
        sweeps=tuple(sweeps),
    )


def check_replicates(replicates: Mapping[str, Any], errors: list[str]) -> tuple[int, list[int]]:
    """The ``[replicates]`` count and evaluator seeds; their mistakes appended to ``errors``."""
    count = replicates["count"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        errors.append(f"replicates.count must be an integer >= 1, got {count!r}")
        count = 1
    seeds = replicates["evaluator_seeds"]
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    ):
        errors.append(f"replicates.evaluator_seeds must be a list of integers >= 0, got {seeds!r}")
        seeds = [0]
    elif len(set(seeds)) != len(seeds):
        errors.append(f"replicates.evaluator_seeds lists a seed more than once: {seeds}")
    return count, seeds


def table_of(
    data: Mapping[str, Any], name: str, defaults: Mapping[str, Any], errors: list[str]
) -> dict[str, Any]:
    """``data[name]`` completed with ``defaults``; unknown keys and wrong types are errors."""
    given = data.get(name, {})
    if not isinstance(given, Mapping):
        errors.append(f"[{name}] must be a table, got {given!r}")
        return dict(defaults)
    for key in sorted(set(given) - set(defaults)):
        errors.append(f"unknown key {name}.{key}; [{name}] takes {', '.join(sorted(defaults))}")
    table = dict(defaults)
    for key, value in given.items():
        if key in defaults:
            problem = _type_problem(defaults[key], value)
            if problem:
                errors.append(f"{name}.{key} {problem}, got {value!r}")
            else:
                table[key] = value
    return table


def _type_problem(default: Any, value: Any) -> str | None:
    """Why ``value`` cannot stand where ``default`` does (None: it can)."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "must be true or false"
    if isinstance(value, bool):
        return "must not be a boolean"
    if isinstance(default, int) and not isinstance(value, int):
        return "must be an integer"
    if isinstance(default, float) and not isinstance(value, int | float):
        return "must be a number"
    if isinstance(default, str) and not isinstance(value, str):
        return "must be a string"
    if isinstance(default, list) and not isinstance(value, list):
        return "must be a list"
    return None


def _twin_errors(twins: Mapping[str, Any]) -> list[str]:
    errors = []
    fractions = twins["fractions"]
    if not all(isinstance(f, int | float) and not isinstance(f, bool) for f in fractions):
        return [f"fractions must be numbers in (0, 1), got {fractions!r}"]
    for value in fractions:
        if not 0.0 < value < 1.0:
            errors.append(
                f"a partial fraction must lie in (0, 1) (1 is the mixed twin), got {value}"
            )
    if len(set(fractions)) != len(fractions):
        errors.append(f"fractions lists a value more than once: {fractions}")
    block = twins["block_codes"]
    if block < 0:
        errors.append(f"block_codes must be >= 0 codes per permutation block, got {block}")
    if twins["subset"] not in SUBSET_POLICIES:
        errors.append(
            f"subset must be one of {', '.join(map(repr, SUBSET_POLICIES))}, "
            f"got {twins['subset']!r}"
        )
    if not twins["mixed"] and not fractions:
        errors.append("no twin to compare E with: set mixed = true or give fractions")
    return errors


def truth_errors(truth: Mapping[str, Any]) -> list[str]:
    """The oracle's own refusals of ``[truth]`` (``mmgen.truth.Settings``)."""
    from mmgen.study import steps

    errors = []
    for key in ("points", "samples"):
        if truth[key] < 1:
            errors.append(f"{key} must be >= 1, got {truth[key]}")
    if not errors:
        try:
            steps.truth_settings({"truth": truth})
        except UsageError as error:
            errors.append(" ".join(str(error).split()))
    return errors


def _settings_errors(
    tables: Mapping[str, Mapping[str, Any]], sources: list[str], where: str
) -> list[str]:
    """The library configs' own refusals of these settings (one line each)."""
    from mmgen.study import steps

    errors = []
    checks = (
        steps.cvae_configs,
        steps.generate_config,
        steps.check_evaluate_models,
        steps.evaluate_config,
    )
    for check in checks:
        try:
            check({**tables, "sources": sources})
        except UsageError as error:
            errors.append(f"{where}{' '.join(str(error).split())}")
        except (TypeError, ValueError) as error:
            errors.append(f"{where}{error}")
    try:
        steps.pair_config({**tables, "sources": sources})
    except UsageError as error:
        errors.append(f"{where}twins: {' '.join(str(error).split())}")
    return errors


def _sweeps(
    given: Any,
    tables: Mapping[str, Mapping[str, Any]],
    sources: list[str],
    errors: list[str],
    known: set[str],
) -> list[Sweep]:
    """The ``[[sweep]]`` entries; a value's mistakes are those the recipe's own lack."""
    if not isinstance(given, list):
        errors.append("sweep must be an array of tables: [[sweep]] factor = ..., values = [...]")
        return []
    sweeps = []
    factors = sorted(f"{t}.{k}" for t, d in SWEPT_TABLES.items() for k in d if k != "models")
    for index, entry in enumerate(given, start=1):
        where = f"sweep {index}"
        if not isinstance(entry, Mapping) or set(entry) != {"factor", "values"}:
            errors.append(f'{where} must hold exactly factor = "table.key" and values = [...]')
            continue
        factor, values = entry["factor"], entry["values"]
        if factor not in factors:
            errors.append(f"{where}: unknown factor {factor!r}; choose one of {', '.join(factors)}")
            continue
        if not isinstance(values, list) or len(values) < 2:
            errors.append(f"{where}: values must list two or more values of {factor}")
            continue
        table, key = factor.split(".", 1)
        default = SWEPT_TABLES[table][key]
        bad = False
        for value in values:
            problem = _type_problem(default, value) if default is not None else None
            if problem:
                errors.append(f"{where}: {factor} {problem}, got {value!r}")
                bad = True
                continue
            changed = {**tables, table: {**tables[table], key: value}}
            prefix = f"{where}: {factor} = {value!r}: "
            found = [e for e in _settings_errors(changed, sources, "") if e not in known]
            errors += [prefix + e for e in found]
            bad = bad or bool(found)
        if len({repr(v) for v in values}) != len(values):
            errors.append(f"{where}: {factor} lists a value more than once: {values}")
            bad = True
        if not bad:
            sweeps.append(Sweep(factor, tuple(values)))
    seen = [s.factor for s in sweeps]
    for factor in sorted({f for f in seen if seen.count(f) > 1}):
        errors.append(f"{factor} is swept more than once; give one [[sweep]] per factor")
    return sweeps
