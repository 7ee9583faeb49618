"""The config's JSON schema: workflow/schemas/config.schema.yaml plus what the registries generate:
the architectures (``$defs/arch``, kdpipe.architectures) and the methods (``classify.methods``,
``classify.method_params`` and a pair's ``method_params``, kdpipe.methods).

Snakemake's ``validate`` reads a schema from a file only, so ``schema_file`` writes the merged
schema to a temporary file for it; the same merged schema validates in-process (tests, dvc-yaml).
"""

import json
import tempfile
from contextlib import contextmanager
from pathlib import Path

import yaml

from kdpipe import architectures, methods


def config_schema(path) -> dict:
    """The YAML schema at ``path`` with the architecture registry's ``$defs/arch`` and the method
    registry's fragment merged under ``classify``."""
    schema = yaml.safe_load(Path(path).read_text())
    schema.setdefault("$defs", {})["arch"] = architectures.schema_fragment()
    fragment = methods.schema_fragment()
    classify = schema["properties"]["classify"]["properties"]
    classify.update(fragment)
    pair = classify["pairs"]["items"]["properties"]
    pair["method_params"] = {**fragment["method_params"],
                             "description": "this pair's own method settings, over classify.method_params"}
    return schema


@contextmanager
def schema_file(path):
    """The merged schema as a JSON file (for ``snakemake.utils.validate``), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="kdpipe-schema-") as tmp:
        out = Path(tmp) / "config.schema.json"
        out.write_text(json.dumps(config_schema(path)))
        yield str(out)


def validate_config(config: dict, path) -> None:
    """Validate (and fill the schema's defaults into) ``config`` as Snakemake does; raises
    Snakemake's WorkflowError("Error validating config file.", ...) naming the key, or first
    ConfigError for a config past the size budget or holding a non-finite number (as common.smk)."""
    from snakemake.utils import validate

    from kdpipe.config_checks import bounded_and_finite

    bounded_and_finite(config)  # before the schema: its messages print the whole (expanded) config
    with schema_file(path) as merged:
        validate(config, merged)
