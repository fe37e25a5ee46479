"""``mmgen evaluate`` as a library call: train multi-modal VAEs on datasets and measure them.

The evidence that an entangled dataset (MNIST-E, Korthals et al.) is coherent: the same
multi-modal VAEs (any of the eight of ``mmgen.models.registry``; by default the paper's five,
JMVAE, JMVAE-zero, JMVAE-kl, tVAE, M²VAE), trained with the same seed on
MNIST-E, on its mixed twin MNIST-ME and on a naive pairing of real images, and measured side by
side (docs/method.md): subset test ELBOs, the importance-weighted ``log p(M)``, conditionals
``log p(m | rest)``, cross and joint coherence through real-data classifiers (with their test
accuracy as the ceiling), posterior agreement (KL, JSD, naive Bayes on latent means), recovery
of the true codes by per-class probes (``mmgen.probes``), and the quality of the file's own
images (classifier accuracy and Fréchet distance to the real test images).

Each (dataset, model, seed) is a job (``mmgen.jobs``), stored in ``out/jobs/`` as it finishes
(model, figures, curves), so that an interrupted run resumes and torchrun's ranks share the work
(``mmgen.distributed``). Outputs in ``out``: ``report.json`` (every per-seed figure, mean and sd
over seeds, the verdict of docs/method.md, the config and seeds), ``report.md`` (the verdict, then
tables) and ``latent-<model>.png`` (the test set through every encoder, datasets side by side,
first seed; the paper's Fig. 1 bottom).

This module is the command's face: its config and ``evaluate_datasets``. The work is in
``mmgen.runner`` (datasets, plan, jobs, the world loop), ``mmgen.measure`` (one model's figures)
and ``mmgen.report`` (assembly and rendering); their public names are importable from here too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmgen import jobs
from mmgen.atomic import folder_lock
from mmgen.classifiers import ClassifierConfig, TrainedClassifier, load_or_train_classifier
from mmgen.config import require_positive, to_dict
from mmgen.data.header import check_seed
from mmgen.device import fixed_threads, resolve_device
from mmgen.distributed import World
from mmgen.errors import UsageError
from mmgen.measure import (  # noqa: F401 (re-exported: the names callers import from here)
    NO_TRUE_Z,
    MeasureSettings,
    data_quality,
    evaluate_model,
    metric_generator,
)
from mmgen.models.registry import MODELS
from mmgen.report import assemble_report, clear_report, write_report
from mmgen.resources import MIB, require_output_space
from mmgen.runner import (  # noqa: F401 (re-exported)
    DatasetInfo,
    LoadedDataset,
    Progress,
    RunSettings,
    StepCallback,
    TaskCallback,
    check_class_counts,
    check_subsets,
    inspect_datasets,
    load_dataset,
    modality_letters,
    plan_jobs,
    run_job,
    run_jobs,
    split_tensors,
)
from mmgen.train import TrainConfig

log = logging.getLogger(__name__)

DEFAULT_MODELS = ("jmvae", "jmvae-zero", "jmvae-kl", "tvae", "m2vae")

# EvaluateConfig fields that do not change a job's figures: the job set (models, seeds), the
# device setting (the job key holds the device type it resolved to) and a batch size that only
# trades memory for speed. Every other field, including any added later, is in the key.
# Room --out needs before any work (a rough figure: a job's model folder, latent means and
# figures, and the report): a full disk is found before training, not when the first job is stored.
REPORT_BYTES = 16 * MIB
JOB_INDEPENDENT_FIELDS = frozenset({"models", "seeds", "device", "eval_batch_size"})


def _distinct(flag: str, noun: str, values: Sequence[Any], example: str) -> tuple[Any, ...]:
    """``values`` as a tuple, refusing an empty list or a repeated entry (one line each)."""
    values = tuple(values)
    if not values:
        raise UsageError(f"{flag} names no {noun}; give e.g. {example}")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise UsageError(f"{flag} lists {repeated} more than once; name each {noun} once")
    return values


@dataclass(frozen=True)
class EvaluateConfig:
    """What ``mmgen evaluate`` trains and measures (saved in ``report.json``)."""

    models: tuple[str, ...] = DEFAULT_MODELS  # keys of mmgen.models.registry.MODELS
    epochs: int = 100  # training epochs of every model (tVAE: each of its two stages)
    batch_size: int = 128
    lr: float = 1e-3  # Adam
    k: int = 1000  # importance samples K of log p(M) and the conditionals (JMVAE code: 1000)
    prior_samples: int = 5000  # N_w prior draws estimating p(given) in log p(a|b) (JMVAE: 5000)
    joint_samples: int = 10_000  # prior draws of the joint coherence
    elbo_samples: int = 10  # draws z ~ q(z|S) averaged per test point in the subset ELBOs
    jsd_samples: int = 64  # Monte-Carlo draws per test point and side of the JSD
    limit: int | None = None  # use only the first N train and test tuples of every file
    # Measure on the first N test tuples only (overrides limit for the test split): the IW bound
    # and the conditionals decode N·K and N·N_w codes, the bulk of evaluate's time on a CPU.
    test_limit: int | None = None
    # One job per (dataset, model, seed): the seed keys the model's initialisation, the shuffles
    # and every metric draw, and is the same on every dataset (the pairing of docs/method.md).
    seeds: tuple[int, ...] = (0,)
    device: str = "auto"  # auto, cpu or cuda
    classifier_epochs: int = 3  # epochs of each real-data classifier (cached by its config)
    eval_batch_size: int = 1000  # encoder/decoder batch in the metrics; no effect on results
    # Latent size d of every multi-modal VAE (the paper's 2; d <= 2 adds the quadrature row).
    latent_dim: int = 2
    # Torch's CPU threads of every classifier and job: float sums depend on the thread count, so
    # a fixed count gives the same report however it is launched (one process or torchrun ranks).
    threads: int = 1

    def __post_init__(self) -> None:
        models = _distinct("--models", "model", self.models, "--models jmvae,m2vae")
        if self.k <= 0:
            raise UsageError(
                f"--k must be >= 1 importance samples, got {self.k}; the paper used --k 1000 "
                "(--k 1 gives the plain ELBO)"
            )
        for name in ("limit", "test_limit"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} must be a positive number of tuples, got {value}")
        for name in (
            "epochs",
            "batch_size",
            "lr",
            "prior_samples",
            "joint_samples",
            "elbo_samples",
            "jsd_samples",
            "classifier_epochs",
            "eval_batch_size",
            "latent_dim",
            "threads",
        ):
            require_positive(name.replace("_", "-"), getattr(self, name))
        object.__setattr__(self, "models", models)
        seeds = _distinct("--seeds", "seed", self.seeds, "--seeds 0 1 2")
        for seed in seeds:
            check_seed(seed)
        # Sorted: the same set of seeds is the same evaluation, whatever order it was typed in.
        object.__setattr__(self, "seeds", tuple(sorted(int(s) for s in seeds)))

    @property
    def seed(self) -> int:
        """The seed of a one-seed config (a job's: ``for_seed``)."""
        if len(self.seeds) != 1:
            raise ValueError(
                f"a config of seeds {list(self.seeds)} has no single seed; use for_seed"
            )
        return self.seeds[0]

    def for_seed(self, seed: int) -> EvaluateConfig:
        """This config restricted to one seed: what one job trains and measures with."""
        return dataclasses.replace(self, seeds=(seed,))

    def job_settings(self) -> dict[str, Any]:
        """Every field that affects a job's result (the job key's settings, by field name)."""
        return {k: v for k, v in to_dict(self).items() if k not in JOB_INDEPENDENT_FIELDS}

    def train_config(self) -> TrainConfig:
        """The optimisation settings shared by every model (Adam, docs/method.md)."""
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer="adam",
            seed=self.seed,
            eval_batch_size=self.eval_batch_size,
        )

    def measure_settings(self) -> MeasureSettings:
        """The seed and sample counts of ``mmgen.measure`` (a one-seed config's)."""
        return MeasureSettings(
            seed=self.seed,
            k=self.k,
            prior_samples=self.prior_samples,
            joint_samples=self.joint_samples,
            elbo_samples=self.elbo_samples,
            jsd_samples=self.jsd_samples,
            batch_size=self.eval_batch_size,
        )

    def run_settings(self) -> RunSettings:
        """What every job trains and measures with (``mmgen.runner``; seeds set per job)."""
        first = self.for_seed(self.seeds[0])
        return RunSettings(
            train=first.train_config(),
            measure=first.measure_settings(),
            limit=self.limit,
            test_limit=self.test_limit,
            latent_dim=self.latent_dim,
            record=self.job_settings(),
        )


def check_models(models: Sequence[str], registry: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming every unknown model and the valid choices."""
    unknown = [m for m in models if m not in registry]
    if unknown:
        raise UsageError(
            f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(registry)} "
            "(comma-separated, e.g. --models jmvae,m2vae)"
        )


def evaluate_datasets(
    paths: Sequence[Path | str],
    out: Path | str,
    config: EvaluateConfig | None = None,
    data_dir: Path | str | None = None,
    cache_dir: Path | str | None = None,
    on_task: TaskCallback | None = None,
    on_step: StepCallback | None = None,
    overwrite: bool = False,
    world: World | None = None,
    poll_seconds: float = 1.0,
) -> dict[str, Any] | None:
    """Train every model of ``config`` on every dataset with every seed, measure, report.

    Each (dataset, model, seed) is a job (``mmgen.jobs``) stored in ``out/jobs/`` as soon as it
    finishes; a rerun of the same command after a kill redoes only the unfinished jobs and
    writes the same ``report.json``. Under torchrun (``world``), the pending jobs are shared
    round robin over the ranks and rank 0 writes the report once every job is stored.

    ``out`` is claimed (locked against a second writer, checked writable, compared with the
    settings of the jobs it holds) before anything is trained. ``report.json`` is written last:
    a folder without it is an unfinished evaluation that the same command completes.

    Args:
        paths: mmgen HDF5 files with the same number of modalities (e.g. MNIST-E, MNIST-ME and
            the naive pairing), reported side by side.
        out: folder for ``report.json``, ``report.md``, the figures and ``jobs/``.
        config: models, seeds, training and sample counts, device.
        data_dir: where the real sources are (for the classifiers); else the usual search.
        cache_dir: classifier cache (default ``$XDG_CACHE_HOME/mmgen/classifiers``).
        on_task: progress callback ``(jobs done, jobs in all, current job)``; rank 0 only.
        on_step: progress callback after every training step (``{"batch": size}``).
        overwrite: replace the jobs of a folder evaluated with other settings (jobs whose key
            still matches are reused) and remove the jobs this command does not ask for.
        world: this process's place among torchrun's processes (default: one process).
        poll_seconds: how often rank 0 looks for the other ranks' finished jobs.

    Returns:
        The report (as written to ``report.json``) on rank 0; ``None`` on the other ranks.

    Raises:
        FileNotFoundError: a dataset or a real source is missing.
        ValueError: an unknown model, a file that is not an mmgen dataset, files that disagree
            on the modality count, a bad setting, or ``out`` holds jobs of other settings and
            ``overwrite`` is false (the message lists the settings that differ).
    """
    config = config or EvaluateConfig()
    world = world or World()
    check_models(config.models, MODELS)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; give a folder for the report")
    datasets = inspect_datasets(paths)
    check_subsets(datasets, config.limit, config.test_limit)
    # One writer per report folder (rank 0 under torchrun; the others write only their jobs),
    # claimed before any work: a second evaluate into the same --out fails at once.
    lock = folder_lock(out) if world.is_main else contextlib.nullcontext()
    with lock, fixed_threads(config.threads):  # every classifier and job: the same threads
        device = world.device(resolve_device(config.device))
        # The device type, not this rank's GPU index: rank 0 under torchrun writes what one
        # process does.
        device_type = torch.device(device.type)
        settings = {**config.job_settings(), "device": device.type}
        if world.is_main:
            current = jobs.manifest(settings, {d.name: d.sha256 for d in datasets})
            # A full disk under --out is found now, not when the first job is stored.
            require_output_space(out, "--out", REPORT_BYTES, "the report and its jobs")
            jobs.prepare_folder(out, current, overwrite)

        identities = list(dict.fromkeys(s for d in datasets for s in d.sources.values()))
        classifier_config = ClassifierConfig(epochs=config.classifier_epochs)

        def load_classifiers() -> dict[str, TrainedClassifier]:
            loaded = {
                source.label: load_or_train_classifier(
                    source.spec,
                    data_dir,
                    cache_dir,
                    classifier_config,
                    device,
                    on_step,
                    classes=source.classes,
                    reserve=len(identities),
                )
                for source in identities
            }
            check_class_counts(datasets, loaded)
            return loaded

        # Rank 0 trains the missing classifiers into the cache; the other ranks then load them.
        by_source = load_classifiers() if world.is_main else {}
        if world.is_main:
            jobs.first_classifier_summaries(out, {s: c.summary() for s, c in by_source.items()})
        world.barrier()
        if not world.is_main:
            by_source = load_classifiers()
        classifier_keys = {s: c.info["key"] for s, c in by_source.items()}
        plan = plan_jobs(
            datasets, config.models, config.seeds, settings, classifier_keys, config.latent_dim
        )
        pending = None
        if world.is_main:
            if overwrite:
                for folder in jobs.prune(out, plan):
                    log.info("removed %s (not a job of this command)", folder)
            pending = [job for job in plan if not jobs.is_done(out, job)]
        # Every rank shares rank 0's list: a job another rank finishes meanwhile must not move the
        # round robin's assignment.
        pending = world.broadcast(pending)
        progress = Progress(out, plan, on_task if world.is_main else None)
        run_jobs(
            plan,
            pending,
            datasets,
            by_source,
            config.run_settings(),
            out,
            device,
            world,
            progress,
            on_step,
            poll_seconds,
        )
        if not world.is_main:
            return None
        progress.show("report")
        clear_report(out, config.models)
        record = to_dict(config)
        report = assemble_report(
            datasets, plan, record, out, by_source, device, device_type, data_dir, cache_dir
        )
        write_report(out, report)
        if on_task is not None:
            on_task(len(plan), len(plan), "done")
        return report
