"""Checking a config in-process, as the workflow does while loading: no Snakemake run per case.

``refusal`` merges overlays onto config.yaml the way `--configfile` does (snakemake's
update_config), validates with the workflow's schema (the YAML file plus the method registry's part, as
the workflow does), then runs
kdpipe.config_checks, and returns the message Snakemake would print (None when accepted).
"""

import copy
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config

from kdpipe.config_checks import ConfigError, check_config
from kdpipe.config_schema import validate_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
BASE = yaml.safe_load((ROOT / "config.yaml").read_text())
DEMO = yaml.safe_load((ROOT / "presets" / "demo.yaml").read_text())


def merged(*overlays: dict) -> dict:
    config = copy.deepcopy(BASE)
    for overlay in overlays:
        update_config(config, copy.deepcopy(overlay))
    return config


def refusal(*overlays: dict) -> str | None:
    """What the workflow says about config.yaml + ``overlays`` when it refuses them, else None."""
    config = merged(*overlays)
    try:
        validate_config(config, SCHEMA)
        check_config(config)
    except WorkflowError as err:
        return str(err)
    except ConfigError as err:
        return f"Error in the config: {err}"  # as workflow/rules/common.smk words it
    return None
