"""A study as a graph of content-keyed jobs: CVAEs → generate → twins → truth → evaluate.

Each job is named by the SHA-256 of the canonical JSON of what determines its output (the
settings it uses, its seed and the keys of the jobs it reads), so a job is shared by every
sweep point that needs it, a kill loses only the jobs under way, and a changed setting makes new
keys only for the jobs it touches: a changed ``evaluate.k`` reruns the evaluations and nothing
else; a changed ``cvae.beta`` reruns everything downstream of the CVAEs.

A *unit* is one evaluation of the study: one sweep point × one dataset replicate, whose
evaluate job measures E beside its twins with every evaluator seed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from mmgen.jobs import canonical_json
from mmgen.study.recipe import DEFAULT_THREADS, Recipe, replicate_seed

PHASES = ("cvae", "generate", "pair", "mix", "truth", "evaluate")
ENTANGLED = "e"  # the entangled file's dataset name in every evaluation
NAIVE = "naive"
BASE_POINT = "recipe"


def twin_name(fraction: float) -> str:
    """The dataset name of a twin: ``me`` for the mixed twin, ``me-f0.5`` for a partial one."""
    return "me" if fraction == 1.0 else f"me-f{fraction:g}"


def key_of(identity: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()


@dataclass(frozen=True)
class StudyJob:
    """One job: what it runs (``spec``, JSON-ready) and where (``folder`` under ``jobs/``)."""

    kind: str  # one of PHASES
    key: str
    folder: str  # e.g. "cvae/3fa1c2d4e5f6-mnist-r0"
    replicate: int
    spec: dict[str, Any]  # settings, seed, the folders of the jobs it reads
    needs: tuple[str, ...] = ()  # keys of the jobs it reads

    def describe(self) -> str:
        return f"{self.kind} {self.folder.split('/', 1)[1]}"


@dataclass(frozen=True)
class Point:
    """One setting of the study: the recipe itself, or one sweep's factor at one value."""

    name: str
    factor: str | None
    value: Any
    recipe: Recipe


@dataclass(frozen=True)
class Unit:
    """The evaluation of one point × replicate: its evaluate job and the datasets it holds."""

    point: str
    replicate: int
    evaluate: str  # the evaluate job's key
    twins: tuple[str, ...]  # the twins' dataset names, mixed twin first
    naive: bool
    truth: str | None = None  # the truth job's key (None: [truth] enabled = false)
    fractions: dict[str, float] = field(default_factory=dict)  # twin name → its f


@dataclass
class Plan:
    jobs: dict[str, StudyJob] = field(default_factory=dict)  # key → job, in insertion order
    points: list[Point] = field(default_factory=list)
    units: list[Unit] = field(default_factory=list)

    def add(self, job: StudyJob) -> StudyJob:
        return self.jobs.setdefault(job.key, job)

    def by_phase(self, phase: str) -> list[StudyJob]:
        return sorted((j for j in self.jobs.values() if j.kind == phase), key=lambda j: j.folder)

    def unit_job(self, unit: Unit) -> StudyJob:
        return self.jobs[unit.evaluate]


def points(recipe: Recipe) -> list[Point]:
    """The recipe, then every sweep value (one factor at a time, the rest as the recipe)."""
    found = [Point(BASE_POINT, None, None, recipe)]
    for sweep in recipe.sweeps:
        for value in sweep.values:
            found.append(
                Point(
                    f"{sweep.factor}={value}",
                    sweep.factor,
                    value,
                    recipe.with_override(sweep.factor, value),
                )
            )
    return found


def plan_study(recipe: Recipe) -> Plan:
    """Every job of ``recipe`` and its units, jobs shared across points by their keys."""
    plan = Plan(points=points(recipe))
    for point in plan.points:
        for replicate in range(recipe.replicates):
            plan.units.append(_plan_unit(plan, point, replicate))
    return plan


def _threads(recipe: Recipe) -> dict[str, int]:
    """A job spec's ``threads``: only when not the default, so older recipes keep their keys."""
    return {} if recipe.threads == DEFAULT_THREADS else {"threads": recipe.threads}


def _plan_unit(plan: Plan, point: Point, r: int) -> Unit:
    recipe = point.recipe
    cvaes = []
    for source in recipe.sources:
        seed = replicate_seed(recipe.seed, r, "cvae", source)
        spec = {"source": source, "cvae": recipe.cvae, "seed": seed, **_threads(recipe)}
        key = key_of({"kind": "cvae", **spec})
        cvaes.append(plan.add(StudyJob("cvae", key, f"cvae/{key[:12]}-{source}-r{r}", r, spec)))
    seed = replicate_seed(recipe.seed, r, "generate")
    spec = {
        # allow_collapsed only keys the job when set, so recipes without it keep their keys
        "generate": {
            k: v for k, v in recipe.generate.items() if k != "allow_collapsed" or v
        },
        "seed": seed,
        "cvaes": [job.folder for job in cvaes],
        "file": f"{ENTANGLED}.h5",
        **_threads(recipe),
    }
    key = key_of({"kind": "generate", **spec, "cvaes": [job.key for job in cvaes]})
    entangled = plan.add(
        StudyJob("generate", key, f"generate/{key[:12]}-r{r}", r, spec, tuple(j.key for j in cvaes))
    )
    files = {ENTANGLED: entangled}
    fractions = ([1.0] if recipe.twins["mixed"] else []) + [
        float(f) for f in recipe.twins["fractions"]
    ]
    for fraction in fractions:
        name = twin_name(fraction)
        seed = replicate_seed(recipe.seed, r, "shuffle", name)
        spec = {
            "parent": entangled.folder,
            "modality": recipe.twins["modality"],
            "fraction": fraction,
            "block_codes": recipe.twins["block_codes"],
            "seed": seed,
            "file": f"{name}.h5",
            **_threads(recipe),
        }
        key = key_of({"kind": "mix", **spec, "parent": entangled.key})
        files[name] = plan.add(
            StudyJob("mix", key, f"mix/{key[:12]}-{name}-r{r}", r, spec, (entangled.key,))
        )
    if recipe.twins["naive"]:
        seed = replicate_seed(recipe.seed, r, "pair")
        spec = {
            "sources": list(recipe.sources),
            "limit": recipe.twins["naive_limit"],
            "seed": seed,
            "file": f"{NAIVE}.h5",
            **_threads(recipe),
        }
        key = key_of({"kind": "pair", **spec})
        files[NAIVE] = plan.add(StudyJob("pair", key, f"pair/{key[:12]}-r{r}", r, spec))
    generated = {name: job for name, job in files.items() if name != NAIVE}
    truth_key = None
    if recipe.truth["enabled"]:
        # One job per replicate's generated files (they share the CVAEs: decoded once when the
        # oracle batches); the truth is stored beside each file, checked by its SHA-256.
        spec = {
            "files": {name: f"{job.folder}/{job.spec['file']}" for name, job in generated.items()},
            "truth": recipe.truth,
            "decode": recipe.generate["decode"],
            **_threads(recipe),
        }
        truth_key = key_of({"kind": "truth", **spec, "files": _keys(generated)})
        plan.add(
            StudyJob(
                "truth",
                truth_key,
                f"truth/{truth_key[:12]}-r{r}",
                r,
                spec,
                tuple(job.key for job in generated.values()),
            )  # fmt: skip
        )
    # Models and evaluator seeds are left out of the key: evaluate's own jobs are per
    # (file, model, seed), so adding a seed or a model reuses the folder's finished jobs.
    spec = {
        "files": {name: f"{job.folder}/{job.spec['file']}" for name, job in files.items()},
        # latent_dim and threads key the job only when not their defaults (2, 1), so recipes
        # written before these settings existed keep their keys
        "evaluate": {
            k: v
            for k, v in recipe.evaluate.items()
            if k != "models" and (k, v) not in (("latent_dim", 2), ("threads", 1))
        },
        "subset": recipe.twins["subset"],
    }
    identity = {"kind": "evaluate", **spec, "files": {n: j.key for n, j in files.items()}}
    key = key_of(identity)
    spec = {
        **spec,
        "models": list(recipe.evaluate["models"]),
        "seeds": list(recipe.evaluator_seeds),
    }
    plan.add(
        StudyJob(
            "evaluate",
            key,
            f"evaluate/{key[:12]}-r{r}",
            r,
            spec,
            tuple(job.key for job in files.values()),
        )
    )
    twins = tuple(name for name in files if name not in (ENTANGLED, NAIVE))
    return Unit(
        point.name, r, key, twins, NAIVE in files, truth_key,
        dict(zip(twins, fractions, strict=True)),
    )  # fmt: skip


def _keys(jobs: dict[str, StudyJob]) -> dict[str, str]:
    return {name: job.key for name, job in jobs.items()}
