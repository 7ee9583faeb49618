"""Autoencoder-pair tables: one row per run, and per variant mean ± std over seeds."""

import pandas as pd

from kdpipe.tables import headline, metrics_file, seed_stats, write_tables

# X -> Y scored as segmentation, Y -> X as image quality; l1_xy is the label-map reconstruction.
METRICS = ["pixel_acc", "miou", "l1_yx", "psnr_yx", "ssim_yx", "l1_xy"]


def pairs_text(pairs) -> str:
    return ", ".join(f"e{k}-d{d}" for k, d in pairs) or "none"


def ae_run_rows(metrics_files) -> pd.DataFrame:
    rows = []
    for path in metrics_files:
        with metrics_file(path) as m:
            cfg, v = m["config"], m["config"]["variant"]
            row = {
                "run": m["run"], "dataset": cfg["dataset"], "dataset_source": cfg["dataset_source"],
                "variant": v["name"], "order": v.get("order", 0), "pairs": pairs_text(v["pairs"]),
                "adapter": v["adapter"] or "–", "alpha": v["alpha"], "match": v["match"], "norm": v["norm"],
                "seed": m["seed"], "epochs": cfg["train"]["epochs"], "best_epoch": m["best"]["epoch"],
                "width": cfg["width"], "params": m["params"], "train_images": m["train_images"],
                "wall_time_s": m["wall_time_s"], "device": m["device"], "host": m.get("host", ""),
                "git_commit": m["git_commit"],
            }
            for when in ("best", "last"):
                for k in METRICS:
                    row[f"{when}_{k}"] = m[when][k]
            rows.append(row)
    return pd.DataFrame(rows).sort_values(["dataset", "variant", "seed"]).reset_index(drop=True)


def ae_summary(runs: pd.DataFrame) -> pd.DataFrame:
    out = []
    for variant, g in runs.groupby("variant", sort=False):
        first = g.iloc[0]
        row = {k: first[k] for k in ("dataset", "dataset_source", "variant", "order", "pairs", "adapter", "alpha",
                                      "match", "norm", "params", "epochs", "train_images")}
        row["seeds"] = len(g)
        for when in ("best", "last"):
            for k in METRICS:
                row[f"{when}_{k}_mean"], row[f"{when}_{k}_std"] = seed_stats(g[f"{when}_{k}"])
        out.append(row)
    # In the config's order: the seed's baseline, then Experiments 1, 2, 3, then the user's own.
    return pd.DataFrame(out).sort_values("order", kind="stable").reset_index(drop=True)


def autoencoder_tables(metrics_files, *, runs_csv, summary_csv, headline_json=None) -> None:
    runs = ae_run_rows(metrics_files)
    write_tables(runs, ae_summary(runs), runs_csv=runs_csv, summary_csv=summary_csv, headline_json=headline_json,
                 headline_of=lambda s: headline(
                     s, ["variant"], ["best_miou", "best_pixel_acc", "best_psnr_yx", "best_ssim_yx"]))
