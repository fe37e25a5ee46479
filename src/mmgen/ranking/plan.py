"""The ranking study as content-keyed jobs (``mmgen.study.plan``'s scheme).

Per dataset replicate r, every seed derived from the recipe seed by keyed streams
(``mmgen.study.recipe.replicate_seed``):

    cvae        the MNIST CVAE: ``mmgen study``'s own job (same spec, hence the same key)
    polymnist   PolyMNIST-E: five modalities decoded from that one CVAE
    mix         its mixed twin: m1 … m4 each permuted within its class (``shuffle``)
    naive       the PolyMNIST-style naive pairing of real MNIST digits, same backgrounds
    export      each variant in MultiVae's ``MMNIST/{split}/m{k}.pt`` layout
    classifiers the five coherence classifiers, trained on the naive export's train split
    fit         one MultiVae model trained on one variant with one training seed, and its
                coherences (joint; cross given 1 … 4 modalities)
    truth       the ground truth of PolyMNIST-E and its twin (``mmgen study``'s truth step;
                docs/truth.md §3b), unless ``[truth] enabled = false``
    baseline    the model-free pixel baseline: per-class kNN on the raw composites → z
    probe       mmgen's latent recovery of a fit on PolyMNIST-E or its twin (the files hold z):
                class-wise probes from its joint and single-modality posterior means to z

A job's key is the SHA-256 of what determines its output (settings, seed, the keys of the jobs
it reads), so a rerun reuses every finished job and a changed setting reruns only what it
touches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmgen.ranking.recipe import MODALITIES, SOURCE, RankingRecipe
from mmgen.study.plan import StudyJob, key_of
from mmgen.study.recipe import replicate_seed

PHASES = (
    "cvae", "polymnist", "naive", "mix", "export", "classifiers", "fit", "truth", "baseline",
    "probe",
)  # fmt: skip
ENTANGLED, MIXED, NAIVE = "e", "mixed", "naive"
VARIANTS = (ENTANGLED, MIXED, NAIVE)
WITH_CODES = (ENTANGLED, MIXED)  # the variants whose files store the true code z
MIXED_MODALITIES = ",".join(f"m{k}" for k in range(1, MODALITIES))  # m1,m2,m3,m4
EXPORT_DIR = "polymnist"  # the export folder inside an export job


def training_seed(seed: int) -> int:
    """A 63-bit keyed seed folded to MultiVae's ``set_seed`` range (NumPy's: below 2**32)."""
    return seed % 2**32


@dataclass(frozen=True)
class Fit:
    """One (replicate, variant, model, training seed) and its fit job's key."""

    replicate: int
    variant: str
    model: str
    seed: int
    key: str


@dataclass
class RankingPlan:
    jobs: dict[str, StudyJob] = field(default_factory=dict)
    fits: list[Fit] = field(default_factory=list)
    classifiers: dict[int, str] = field(default_factory=dict)  # replicate → its job's key
    truths: dict[int, str] = field(default_factory=dict)  # replicate → truth job (if enabled)
    baselines: dict[int, str] = field(default_factory=dict)  # replicate → baseline job
    probes: dict[str, str] = field(default_factory=dict)  # fit key → its probe job's key

    def add(self, job: StudyJob) -> StudyJob:
        return self.jobs.setdefault(job.key, job)

    def by_phase(self, phase: str) -> list[StudyJob]:
        return sorted((j for j in self.jobs.values() if j.kind == phase), key=lambda j: j.folder)


def plan_ranking(recipe: RankingRecipe) -> RankingPlan:
    """Every job of ``recipe``: per replicate its data, exports, classifiers and fits."""
    plan = RankingPlan()
    for r in range(recipe.replicates):
        _plan_replicate(plan, recipe, r)
    return plan


def _job(plan: RankingPlan, kind: str, tag: str, r: int, spec: dict, needs=()) -> StudyJob:
    """Add the job whose identity is ``spec`` with the needed jobs' keys for their folders."""
    identity = {"kind": kind, **spec, "needs": [job.key for job in needs]}
    key = key_of(identity)
    folder = f"{kind}/{key[:12]}-{tag}r{r}"
    return plan.add(StudyJob(kind, key, folder, r, spec, tuple(job.key for job in needs)))


def _plan_replicate(plan: RankingPlan, recipe: RankingRecipe, r: int) -> None:
    seed = recipe.seed
    # The CVAE job exactly as mmgen.study.plan names it: a study with the same [cvae] shares it.
    spec = {"source": SOURCE, "cvae": recipe.cvae, "seed": replicate_seed(seed, r, "cvae", SOURCE)}
    key = key_of({"kind": "cvae", **spec})
    cvae = plan.add(StudyJob("cvae", key, f"cvae/{key[:12]}-{SOURCE}-r{r}", r, spec))
    poly = recipe.polymnist
    generate = {k: v for k, v in poly.items() if k not in ("backgrounds", "allow_collapsed")}
    common = {"backgrounds": list(poly["backgrounds"])}
    spec = {
        "generate": generate,
        **common,
        "allow_collapsed": poly["allow_collapsed"],
        "cvae": cvae.folder,
        "seed": replicate_seed(seed, r, "polymnist"),
        "file": f"{ENTANGLED}.h5",
    }
    entangled = _job(plan, "polymnist", "", r, spec, (cvae,))
    spec = {
        "parent": f"{entangled.folder}/{entangled.spec['file']}",
        "modality": MIXED_MODALITIES,
        "seed": replicate_seed(seed, r, "shuffle", MIXED),
        "file": f"{MIXED}.h5",
    }
    mixed = _job(plan, "mix", "", r, spec, (entangled,))
    spec = {
        **common,
        "source": SOURCE,
        "limit": max(poly["n_train"], poly["n_test"]),  # real digits read per split
        "seed": replicate_seed(seed, r, "pair"),
        "file": f"{NAIVE}.h5",
    }
    naive = _job(plan, "naive", "", r, spec)
    exports = {}
    for variant, parent in ((ENTANGLED, entangled), (MIXED, mixed), (NAIVE, naive)):
        spec = {"file": f"{parent.folder}/{parent.spec['file']}", "out": EXPORT_DIR}
        exports[variant] = _job(plan, "export", f"{variant}-", r, spec, (parent,))
    spec = {
        "classifier": recipe.classifier,
        "train": exports[NAIVE].folder,  # the field's data: real digits
        "test": {variant: job.folder for variant, job in exports.items()},
        "rows": {"train": poly["n_train"], "test": poly["n_test"]},
        "seed": replicate_seed(seed, r, "classifiers"),
    }
    classifiers = _job(plan, "classifiers", "", r, spec, tuple(exports.values()))
    plan.classifiers[r] = classifiers.key
    settings = {k: v for k, v in recipe.multivae.items() if k != "models"}
    for variant, export in exports.items():
        for model in recipe.models:
            for s in recipe.evaluator_seeds:
                spec = {
                    "model": model,
                    "multivae": settings,
                    "coherence": recipe.coherence,
                    "data": export.folder,
                    "classifiers": classifiers.folder,
                    "rows": {"train": poly["n_train"], "test": poly["n_test"]},
                    # the same training seed on every variant: E − twin differences are paired
                    "seed": training_seed(replicate_seed(seed, r, "fit", model, s)),
                }
                job = _job(plan, "fit", f"{variant}-{model}-s{s}-", r, spec, (export, classifiers))
                plan.fits.append(Fit(r, variant, model, s, job.key))
                if variant in WITH_CODES:
                    spec = {
                        "fit": job.folder,
                        "data": export.folder,
                        "file": export.spec["file"],
                        "rows": job.spec["rows"],
                    }
                    probe = _job(plan, "probe", f"{variant}-{model}-s{s}-", r, spec, (job,))
                    plan.probes[job.key] = probe.key
    files = {ENTANGLED: entangled, MIXED: mixed}
    paths = {variant: f"{job.folder}/{job.spec['file']}" for variant, job in files.items()}
    spec = {"files": paths, "rows": {"train": poly["n_train"], "test": poly["n_test"]}}
    plan.baselines[r] = _job(plan, "baseline", "", r, spec, tuple(files.values())).key
    if recipe.truth["enabled"]:
        spec = {"files": paths, "truth": recipe.truth, "decode": poly["decode"]}
        plan.truths[r] = _job(plan, "truth", "", r, spec, tuple(files.values())).key
