"""kdpipe.data.synthetic: the offline CIFAR-shaped data set."""

import itertools

import pytest
import torch

from kdpipe.data.prepared import load_split
from kdpipe.data.synthetic import class_names, class_points, generate, prepare_synthetic


@pytest.fixture(scope="module")
def medium():
    """One default-configured set, big enough for the statistical checks (shared: generating is the slow part)."""
    return generate(2000, 500, seed=0)


def _class_means(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    flat = images.reshape(len(images), -1).double()
    return torch.stack([flat[labels == c].mean(0) for c in range(num_classes)])


# ----------------------------------------------------------------------------- determinism


def test_same_arguments_same_bytes():
    a = generate(40, 20, seed=7)
    b = generate(40, 20, seed=7)
    for split in ("train", "test"):
        assert torch.equal(a[split][0], b[split][0])
        assert torch.equal(a[split][1], b[split][1])
        assert a[split][0].numpy().tobytes() == b[split][0].numpy().tobytes()


def test_different_seed_different_images():
    a = generate(40, 20, seed=7)
    b = generate(40, 20, seed=8)
    for split in ("train", "test"):
        assert not torch.equal(a[split][0], b[split][0])
        # Not a near-copy either: most pixels differ.
        assert (a[split][0] != b[split][0]).double().mean() > 0.5


def test_train_and_test_are_different_samples():
    d = generate(40, 40, seed=0)
    assert not torch.equal(d["train"][0], d["test"][0])


# ----------------------------------------------------------------------------- shapes and statistics


@pytest.mark.parametrize(("num_train", "num_test", "num_classes"), [(23, 17, 10), (30, 9, 4), (5, 3, 10)])
def test_shapes_dtypes_and_balance(num_train, num_test, num_classes):
    d = generate(num_train, num_test, num_classes=num_classes, seed=1)
    assert set(d) == {"train", "test"}
    for split, n in (("train", num_train), ("test", num_test)):
        images, labels = d[split]
        assert images.dtype == torch.uint8
        assert tuple(images.shape) == (n, 3, 32, 32)
        assert labels.dtype == torch.int64
        assert tuple(labels.shape) == (n,)
        assert int(labels.min()) >= 0 and int(labels.max()) < num_classes
        counts = torch.bincount(labels, minlength=num_classes)
        assert int(counts.sum()) == n
        assert int(counts.max() - counts.min()) <= 1, counts.tolist()


def test_pixel_values_use_the_range(medium):
    images = medium["train"][0]
    assert images.double().std() > 20
    saturated = ((images == 0) | (images == 255)).double().mean()
    assert saturated < 0.05
    # Centred near mid-grey, and not one flat image repeated.
    assert 100 < images.double().mean() < 156
    assert images.reshape(len(images), -1).double().std(0).mean() > 20


def test_nearest_class_mean_is_above_chance_but_not_perfect(medium):
    (x_train, y_train), (x_test, y_test) = medium["train"], medium["test"]
    means = _class_means(x_train, y_train, 10)
    pred = torch.cdist(x_test.reshape(len(x_test), -1).double(), means).argmin(1)
    accuracy = (pred == y_test).double().mean().item()
    assert accuracy > 0.15, accuracy  # chance is 0.10
    assert accuracy < 0.90, accuracy


def test_similar_classes_look_similar_in_pixels(medium):
    """Classes of one group (group_size=2 by default) have closer mean images than classes of different groups."""
    means = _class_means(*medium["train"], 10)
    dist = torch.cdist(means, means)
    same = [dist[i, j] for i, j in itertools.permutations(range(10), 2) if i // 2 == j // 2]
    other = [dist[i, j] for i, j in itertools.permutations(range(10), 2) if i // 2 != j // 2]
    assert torch.stack(same).mean() < torch.stack(other).mean()


# ----------------------------------------------------------------------------- class_points


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("num_classes", "group_size"), [(10, 2), (10, 3), (12, 4)])
def test_class_points_same_group_closer(seed, num_classes, group_size):
    points = class_points(num_classes, group_size, 16, 0.6, torch.Generator().manual_seed(seed))
    assert tuple(points.shape) == (num_classes, 16)
    dist = torch.cdist(points, points)
    pairs = list(itertools.combinations(range(num_classes), 2))
    same = torch.stack([dist[i, j] for i, j in pairs if i // group_size == j // group_size])
    other = torch.stack([dist[i, j] for i, j in pairs if i // group_size != j // group_size])
    assert same.mean() < other.mean()


def test_class_points_without_offsets_collapse_groups():
    # within_group=0: every class of a group sits exactly on the group centre.
    points = class_points(6, 3, 8, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(points[0], points[1]) and torch.equal(points[1], points[2])
    assert torch.equal(points[3], points[4]) and torch.equal(points[4], points[5])
    assert not torch.equal(points[0], points[3])


def test_class_points_seeded():
    a = class_points(10, 2, 16, 0.6, torch.Generator().manual_seed(3))
    b = class_points(10, 2, 16, 0.6, torch.Generator().manual_seed(3))
    c = class_points(10, 2, 16, 0.6, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# ----------------------------------------------------------------------------- names and prepared files


def test_class_names():
    assert class_names(6, 3) == ["group0-a", "group0-b", "group0-c", "group1-a", "group1-b", "group1-c"]
    assert class_names(5, 2) == ["group0-a", "group0-b", "group1-a", "group1-b", "group2-a"]


def test_prepare_synthetic_writes_loadable_splits(tmp_path):
    params = {"num_train": 30, "num_test": 12, "num_classes": 6, "group_size": 3, "seed": 5}
    train_out, test_out = tmp_path / "prep" / "train.pt", tmp_path / "prep" / "test.pt"
    prepare_synthetic(params, train_out=train_out, test_out=test_out)
    expected = generate(**params)
    for path, split, n in ((train_out, "train", 30), (test_out, "test", 12)):
        data = load_split(path)
        assert data["classes"] == ["group0-a", "group0-b", "group0-c", "group1-a", "group1-b", "group1-c"]
        assert data["images"].dtype == torch.uint8 and tuple(data["images"].shape) == (n, 3, 32, 32)
        assert data["labels"].dtype == torch.int64
        assert torch.equal(data["images"], expected[split][0])
        assert torch.equal(data["labels"], expected[split][1])


def test_prepare_synthetic_default_names(tmp_path):
    prepare_synthetic({"num_train": 10, "num_test": 10}, train_out=tmp_path / "a.pt", test_out=tmp_path / "b.pt")
    assert load_split(tmp_path / "a.pt")["classes"] == class_names(10, 2)
    assert load_split(tmp_path / "b.pt")["classes"][:3] == ["group0-a", "group0-b", "group1-a"]
