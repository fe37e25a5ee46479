"""The hand-written estimators against maintained libraries as oracles (issue 18): the per-class
kNN probe and Gaussian naive Bayes against scikit-learn, the Student-t against SciPy. Each test
skips where its library is not installed (both stay optional for mmgen itself)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmgen import metrics, probes
from mmgen.verdict import student_t_cdf, student_t_quantile


def clustered(seed: int, n: int, d: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features around a class centre (continuous: no tied distances) and their labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    centres = rng.normal(scale=2.0, size=(classes, d))
    features = centres[labels] + rng.normal(scale=rng.uniform(0.5, 1.5, size=d), size=(n, d))
    return torch.from_numpy(features), torch.from_numpy(labels)


def test_class_knn_is_scikit_learn_s_k_neighbours_regressor_per_class() -> None:
    neighbors = pytest.importorskip("sklearn.neighbors")
    means, labels = clustered(0, 390, 2, 3)
    train_means, train_labels, test_means, test_labels = (
        means[:300],
        labels[:300],
        means[300:],
        labels[300:],
    )
    rng = np.random.default_rng(2)
    train_codes = torch.from_numpy(rng.normal(size=(300, 2))) + train_means  # a code per point
    predicted, info = probes.class_knn(
        train_means, train_labels, train_codes, test_means, test_labels
    )
    expected = np.empty((len(test_means), 2))
    for label in range(3):
        train = (train_labels == label).numpy()
        test = (test_labels == label).numpy()
        k = min(info["k"], int(train.sum()))
        regressor = neighbors.KNeighborsRegressor(n_neighbors=k, algorithm="brute")
        regressor.fit(train_means[train].numpy(), train_codes[train].numpy())
        expected[test] = regressor.predict(test_means[test].numpy())
    np.testing.assert_allclose(predicted.numpy(), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gaussian_naive_bayes_is_scikit_learn_s(seed: int) -> None:
    naive_bayes = pytest.importorskip("sklearn.naive_bayes")
    features, labels = clustered(seed, 600, 3, 4)
    train, train_labels, test, test_labels = (
        features[:400],
        labels[:400],
        features[400:],
        labels[400:],
    )
    ours = metrics.gaussian_naive_bayes_accuracy(
        train.float(), train_labels, test.float(), test_labels
    )
    oracle = naive_bayes.GaussianNB(var_smoothing=1e-9).fit(train.numpy(), train_labels.numpy())
    assert 0.3 < ours < 1.0  # the sets overlap: a figure that can disagree
    assert ours == pytest.approx(oracle.score(test.numpy(), test_labels.numpy()), abs=1e-6)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 30, 200])
def test_student_t_matches_scipy(df: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    for p in (0.6, 0.9, 0.975, 0.995):
        assert student_t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-6)
    for t in (-4.0, -1.0, 0.3, 2.5):
        assert student_t_cdf(t, df) == pytest.approx(stats.t.cdf(t, df), abs=1e-9)
