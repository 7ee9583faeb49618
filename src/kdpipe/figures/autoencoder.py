"""Autoencoder-pair figures: the seed's picture grids for every variant and direction, and loss curves."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from kdpipe.data.prepared import load_split  # noqa: E402
from kdpipe.models.autoencoder import build_pair, to_signed, to_uint8  # noqa: E402
from kdpipe.figures import save_png  # noqa: E402

DIRECTIONS = {"x2y": "photo X → label map Y", "y2x": "label map Y → photo X"}


def predictions(model_file, photos: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Both directions of a trained pair on uint8 images: {"x2y": label maps, "y2x": photos}."""
    saved = torch.load(model_file, map_location="cpu", weights_only=True)
    model = build_pair(saved["config"])
    model.load_state_dict(saved["state_dict"])
    model.eval()
    with torch.no_grad():
        o1, o2, _ = model(to_signed(photos), to_signed(labels))
    return {"x2y": to_uint8(o1), "y2x": to_uint8(o2)}


def picture_grid(predicted, photos, labels, title: str, path) -> None:
    """Rows: fixed validation images. Columns in the seed's order: predicted, true X, true Y."""
    n = len(photos)
    fig, axes = plt.subplots(n, 3, figsize=(6, 2 * n + 0.6), squeeze=False)
    for i in range(n):
        for j, (img, name) in enumerate(((predicted[i], "predicted"), (photos[i], "true X (photo)"),
                                         (labels[i], "true Y (label map)"))):
            ax = axes[i][j]
            ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_png(fig, path, dpi=120)
    plt.close(fig)


def loss_curves(runs: pd.DataFrame, histories: dict[str, pd.DataFrame], path) -> None:
    """Training loss per term and epoch for every variant (mean over seeds)."""
    variants = list(dict.fromkeys(runs["variant"]))
    fig, axes = plt.subplots(1, len(variants), figsize=(3.2 * len(variants), 3.2), squeeze=False, sharey=True)
    for ax, variant in zip(axes[0], variants):
        names = [r for r in runs.loc[runs["variant"] == variant, "run"] if r in histories]
        frames = [histories[r].set_index("epoch") for r in names]
        terms = [c for c in frames[0].columns if c.startswith(("rec_", "match_"))]
        for term in terms:
            mean = pd.concat([f[term] for f in frames], axis=1).mean(axis=1)
            ax.plot(mean.index, mean, marker=".", label=term)
        ax.set_title(variant, fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("training loss term (log scale)")
    fig.suptitle("loss terms during training (mean over seeds)", fontsize=10)
    fig.tight_layout()
    save_png(fig, path, dpi=130)
    plt.close(fig)


def autoencoder_figures(runs_csv, model_files, history_files, test_file, *, out_dir, images: int = 4) -> None:
    """Grids use each variant's lowest-seed model on the first ``images`` validation pairs."""
    runs = pd.read_csv(runs_csv)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    test = load_split(test_file)
    photos, labels = test["photos"][:images], test["labels_rgb"][:images]
    models = {Path(p).parent.name: p for p in model_files}
    for variant, g in runs.groupby("variant", sort=False):
        run = g.sort_values("seed").iloc[0]
        preds = predictions(models[run["run"]], photos, labels)
        for direction, label in DIRECTIONS.items():
            picture_grid(preds[direction], photos, labels, f"{variant} (seed {run['seed']}): {label}",
                         out_dir / f"autoencoder-{variant}-{direction}.png")
    histories = {Path(p).parent.name: pd.read_csv(p) for p in history_files}
    loss_curves(runs, histories, out_dir / "autoencoder-losses.png")
