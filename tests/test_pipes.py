"""The plumbing between the science parts (issue 18, item 2): each test kills one mutant.

* every job trained and measured with the first seed's streams;
* a setting (``k``, ...) dropped from the job key, so a rerun reuses stale jobs;
* the within-class permutation replaced by a fixed one (``np.roll``);
* Bernoulli decoding drawing 1 with probability 1 − p;
* the sign count of the verdict counting a tie (d = 0) as agreement.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections import Counter

import numpy as np
import torch
from typer.testing import CliRunner

from conftest import make_checkpoint
from mmgen.checkpoint import load_cvae
from mmgen.cli import app
from mmgen.data.h5io import read_split
from mmgen.evaluate import EvaluateConfig, inspect_datasets, plan_jobs
from mmgen.generate import GenerateConfig, generate_dataset
from mmgen.shuffle import class_permutation
from mmgen.verdict import paired_summary
from test_evaluate import write_mmgen_file

runner = CliRunner()

# The fields that must NOT change a job's key, written out here (not read from the module), so
# that a field moved into JOB_INDEPENDENT_FIELDS by mistake fails the test below.
INDEPENDENT = {"models", "seeds", "device", "eval_batch_size"}


def changed(value):
    """Another valid value of a config field."""
    if value is None:
        return 7
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2
    raise AssertionError(f"no other value for {value!r}: extend changed()")


def test_every_setting_of_a_job_is_in_its_key(tmp_path) -> None:
    info = inspect_datasets([write_mmgen_file(tmp_path / "e.h5")])
    classifier_keys = {"mnist": "a" * 64, "fashion-mnist": "b" * 64}

    def key(config: EvaluateConfig) -> str:
        settings = {**config.job_settings(), "device": "cpu"}
        (job,) = plan_jobs(info, config.models, config.seeds, settings, classifier_keys)
        return job.key

    base = EvaluateConfig(models=("jmvae",))
    fields = {f.name for f in dataclasses.fields(EvaluateConfig)}
    assert INDEPENDENT <= fields
    for name in sorted(fields - INDEPENDENT):
        other = dataclasses.replace(base, **{name: changed(getattr(base, name))})
        assert key(other) != key(base), f"{name} does not change the job key"
    # ...and the declared-independent ones do not.
    assert key(dataclasses.replace(base, eval_batch_size=7)) == key(base)


def test_each_job_trains_and_measures_with_its_own_seed(tmp_path, fake_data_root) -> None:
    data = write_mmgen_file(tmp_path / "e.h5")
    quick = ("--epochs", "1", "--k", "2", "--prior-samples", "10", "--joint-samples", "30",
             "--batch-size", "16", "--classifier-epochs", "1", "--device", "cpu", "--quiet",
             "--models", "jmvae", "--data-dir", fake_data_root,
             "--cache-dir", tmp_path / "c")  # fmt: skip

    def figures(out: str, *seeds: int) -> dict:
        result = runner.invoke(
            app, [str(a) for a in ("evaluate", data, "--out", tmp_path / out, *quick,
                                   "--seeds", *seeds)]  # fmt: skip
        )
        assert result.exit_code == 0, result.output
        report = json.loads((tmp_path / out / "report.json").read_text())
        return {s: report["datasets"]["e"]["seeds"][s]["jmvae"] for s in map(str, seeds)}

    both = figures("both", 0, 3)
    alone = figures("alone", 3)
    for name in ("elbo", "log_likelihood", "history"):
        assert both["3"][name] == alone["3"][name], name  # seed 3 is seed 3, in any company
        assert both["3"][name] != both["0"][name], name  # and not seed 0's streams


def test_class_permutation_is_uniform_and_independent_across_classes() -> None:
    labels = np.array([0, 1, 0, 1, 0, 1])  # two classes of three, interleaved
    members = {c: np.flatnonzero(labels == c) for c in (0, 1)}
    draws = 3600
    joint: Counter = Counter()
    for seed in range(draws):
        permutation = class_permutation(labels, np.random.default_rng(seed))
        np.testing.assert_array_equal(labels[permutation], labels)
        joint[tuple(permutation[members[0]]), tuple(permutation[members[1]])] += 1
    # Every pair (permutation of class 0, permutation of class 1) of the 6 × 6 has probability
    # 1/36: uniform within each class and independent between them. A fixed permutation (a
    # roll) hits one cell; a shared one hits 6. Pearson's χ² with 35 degrees of freedom.
    cells = [
        (tuple(a), tuple(b))
        for a in itertools.permutations(members[0])
        for b in itertools.permutations(members[1])
    ]
    expected = draws / len(cells)
    chi2 = sum((joint[cell] - expected) ** 2 / expected for cell in cells)
    assert sum(joint[cell] for cell in cells) == draws
    assert chi2 < 70.0, chi2  # the 0.9999 quantile of χ²(35) is about 71.6


def test_bernoulli_decoding_draws_one_with_the_decoder_s_probability(tmp_path) -> None:
    folders = [make_checkpoint(tmp_path / name, name, seed=i)
               for i, name in enumerate(("mnist", "fashion-mnist"))]  # fmt: skip
    config = GenerateConfig(n_train=400, n_test=10, decode="sample")
    out = generate_dataset(folders, tmp_path / "s.h5", config, device="cpu")
    split = read_split(out, "train")
    for modality, folder in zip(("mnist", "fashion-mnist"), folders, strict=True):
        cvae = load_cvae(folder)
        p = cvae.decode(torch.from_numpy(split.z), torch.from_numpy(split.labels)).numpy()
        x = split.images[modality].reshape(p.shape).astype(np.float64) / 255.0
        assert set(np.unique(x)) <= {0.0, 1.0}
        # E[x | p] = p: in every band of p the share of ones is the band's mean p, within five
        # standard errors (the flipped draw gives 1 − p).
        for low, high in ((0.0, 0.2), (0.2, 0.5), (0.5, 0.8), (0.8, 1.0)):
            band = (p >= low) & (p < high)
            if band.sum() < 1000:
                continue
            mean_p = float(p[band].mean())
            se = math.sqrt(float((p[band] * (1 - p[band])).sum())) / band.sum()
            assert abs(float(x[band].mean()) - mean_p) < 5 * se + 1e-3, (low, high)


def test_a_tie_is_not_agreement() -> None:
    # d_s = 0 is on neither side: it agrees with "> 0" no more than with "< 0".
    assert paired_summary([0.0, 1.0, 2.0], higher_is_better=True)["agree"] == 2
    assert paired_summary([0.0, -1.0], higher_is_better=False)["agree"] == 1
    assert paired_summary([0.0, 0.0], higher_is_better=True)["agree"] == 0


