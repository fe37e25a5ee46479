"""Replicated studies from one recipe (docs/study.md): ``mmgen study run`` and ``report``.

- ``recipe``: the TOML recipe, validated whole before any work;
- ``plan``: the recipe as content-keyed jobs (CVAEs → generate → twins → evaluate);
- ``steps``: the study's only calls into the pipeline's commands;
- ``run``: the jobs, resumable, over torchrun's ranks;
- ``statistics``: the verdict over dataset replicates, evaluator seeds nested in them;
- ``figures`` and ``report``: what the report holds, and report.md / report.json / values.csv.
"""
