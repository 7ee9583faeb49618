"""The config's ``train:`` keys (CUDA graphs, precision, determinism) without importing torch.

kdpipe.plan copies them into every run config when the DAG is built (Snakemake imports the plan,
and must not pay for importing torch); kdpipe.training.accel resolves them for a job's device.
"""

GRAPHS = ("auto", "on", "off")
PRECISIONS = ("auto", "bf16", "fp32")
DEFAULTS = {"cuda_graphs": "auto", "precision": "auto", "deterministic": True}
KEYS = tuple(DEFAULTS)


def requested_settings(train_cfg: dict | None) -> dict:
    """The three keys from a run's ``train`` dict, defaults filled in, values checked."""
    train_cfg = train_cfg or {}
    s = {k: train_cfg.get(k, v) for k, v in DEFAULTS.items()}
    # YAML 1.1 reads a bare `on`/`off` as a boolean: take it as the word the user wrote.
    if isinstance(s["cuda_graphs"], bool):
        s["cuda_graphs"] = "on" if s["cuda_graphs"] else "off"
    if s["cuda_graphs"] not in GRAPHS:
        raise ValueError(f"train.cuda_graphs must be one of {', '.join(GRAPHS)}; got {s['cuda_graphs']!r}")
    if s["precision"] not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}; got {s['precision']!r}")
    if not isinstance(s["deterministic"], bool):
        raise ValueError(f"train.deterministic must be true or false; got {s['deterministic']!r}")
    return s


def run_train_block(config: dict, recipe: dict) -> dict:
    """A run's ``train`` dict: its recipe, plus the config's ``train:`` settings (a recipe's own win)."""
    return {**recipe, **requested_settings({**(config.get("train") or {}), **recipe})}
