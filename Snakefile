# kdpipe: knowledge-distillation experiments, from raw data to results/report.pdf.
#   snakemake --cores 8 --resources gpu=2 results/report.pdf
#   snakemake --cores 2 --configfile presets/demo.yaml results/report.pdf
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        "results/report.pdf",
    default_target: True
