"""The PolyMNIST-E ranking study (docs/ranking.md): ``mmgen study polymnist RECIPE --out DIR``.

Does entangled data change the ranking the field reports? MultiVae's MVAE, MMVAE and MoPoE,
trained by MultiVae's own trainer on PolyMNIST-E, its mixed twin and the PolyMNIST-style naive
pairing, measured with MultiVae's PolyMNIST coherence protocol, replicated over datasets.

- ``recipe``: the TOML recipe, validated whole before any work;
- ``plan``: the recipe as content-keyed jobs (CVAE → PolyMNIST-E → twins → exports →
  classifiers → fits), the CVAE jobs keyed as ``mmgen study``'s;
- ``multivae_steps``: the only calls into MultiVae (models, trainer, classifiers, coherence);
- ``run``: the jobs, resumable;
- ``report``: values.csv, report.json and report.md.
"""
