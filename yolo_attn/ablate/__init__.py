"""``yolo-attn ablate``: does a block really help? Paired, seeded training runs against the base and a capacity control.

Every config (the base, the capacity control, each block config) trains with one recipe and the same seeds
(Ultralytics' ``seed=k deterministic=True``); the difference of a config to the base is taken per seed and gets a
Student t interval (``stats``). The parts:

- ``planning``: the entries (base, control, configs, following the configs' family, task and variant) and the recipe;
- ``running``: the runs still to do, as local processes or Ray tasks, each a fresh process running ``worker.py``;
- ``records``: one JSON record per run and the manifest that pins ``--out`` to one recipe (resume);
- ``report``: ablation.csv, ablation.md and the forest plot ablation.png.

Layout of ``--out DIR``: ``ablation.json`` (the recipe), ``runs/<stem>/seed<k>.json``, ``logs/<stem>-seed<k>.log``,
``work/`` (local runs' configs, weights, validation output), ``ablation.csv|md|png`` (rewritten after every run).
"""

from .planning import AblateError, Entry, Options, Recipe, default_base, default_control, plan, split_args
from .running import Prepared, ablate, dry_run, prepare
from .stats import Paired, paired, seeds_to_resolve, t_quantile

__all__ = ("AblateError", "Entry", "Options", "Paired", "Prepared", "Recipe", "ablate", "default_base",
           "default_control", "dry_run", "paired", "plan", "prepare", "seeds_to_resolve", "split_args", "t_quantile")  # fmt: skip
