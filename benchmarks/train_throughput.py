"""Training throughput of kdpipe's loop against minimal plain-PyTorch loops, same model and data.

    python benchmarks/train_throughput.py [--arch resnet8] [--images 2000] [--epochs 2] [--threads 2]

All three train the same architecture from the same initial weights on the same synthetic
images with SGD at batch 64 on the same device:
  plain        tensors already in memory, sliced per batch, no augmentation: the least work possible
  dataloader   the common recipe: torchvision transforms (random crop, flip) in a DataLoader
  kdpipe       kdpipe.training.loop.fit with the classifier family (augmentation on the device,
               per-epoch checkpoint, loss-term logging, one evaluation per epoch on the test split)
Prints images per second and the ratios kdpipe / plain and kdpipe / dataloader.
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from kdpipe.data.synthetic import generate
from kdpipe.models import build_model
from kdpipe.training.classify import Classifier
from kdpipe.training.loop import Recipe, fit


def plain_loop(model, x, y, epochs, batch_size, device):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), device=device)
        for start in range(0, len(y), batch_size):
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


class _Images(Dataset):
    def __init__(self, images, labels):
        self.images, self.labels = images, labels
        self.tf = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
                              v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.25] * 3)])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.tf(self.images[i]), self.labels[i]


def dataloader_loop(model, images, labels, epochs, batch_size, device):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loader = DataLoader(_Images(images, labels), batch_size=batch_size, shuffle=True, num_workers=0)
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb.to(device)), yb.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet8")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--test-images", type=int, default=500)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    data = generate(a.images, a.test_images, seed=0)
    (images, labels), test = data["train"], data["test"]
    n = a.images * a.epochs
    results = {}

    def timed(name, fn):
        torch.manual_seed(0)
        model = build_model(a.arch, 10).to(device, memory_format=torch.channels_last)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(model)
        if device.type == "cuda":
            torch.cuda.synchronize()
        results[name] = n / (time.perf_counter() - t0)
        print(f"{name:11s} {results[name]:9.0f} images/s")

    x = ((images.float() / 255 - 0.5) / 0.25).to(device).contiguous(memory_format=torch.channels_last)
    timed("plain", lambda m: plain_loop(m, x, labels.to(device), a.epochs, a.batch_size, device))
    timed("dataloader", lambda m: dataloader_loop(m, images, labels, a.epochs, a.batch_size, device))
    with tempfile.TemporaryDirectory() as tmp:
        def ours(model):
            family = Classifier(model, (images, labels), test, method="alone", batch_size=a.batch_size, device=device)
            recipe = Recipe(epochs=a.epochs, batch_size=a.batch_size, lr=0.05)
            fit(family, recipe, seed=0, device=device, resume_path=Path(tmp) / "resume.pt", run_config={"bench": 1})
        timed("kdpipe", ours)
    print(f"\nkdpipe / plain      {results['kdpipe'] / results['plain']:.2f}  "
          f"(kdpipe also augments, evaluates {a.test_images} test images per epoch and checkpoints)")
    print(f"kdpipe / dataloader {results['kdpipe'] / results['dataloader']:.2f}")


if __name__ == "__main__":
    main()
