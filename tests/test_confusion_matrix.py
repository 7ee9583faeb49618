"""The autoencoder's confusion matrix: counts by hand, the same scores as torchmetrics gave, and a
memory bound measured under deterministic algorithms (issue 15 item 6).

torchmetrics' confusion matrix, with deterministic algorithms on, counts through a pixels x
classes² int64 table (about 10 GB for a 50 x 256 x 256 batch with 19 classes); kdpipe's makes one
int64 index per pixel of a fixed-size chunk and accumulates ones into a classes² vector.
"""

import weakref

import pytest
import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from kdpipe.data.cityscapes import CLASS_NAMES, VOID
from kdpipe.training import ae_pair
from kdpipe.training.ae_pair import CHUNK, confusion_matrix, segmentation_scores


def test_counts_by_hand_with_ignored_pixels():
    # 3 classes; rows are the true class, columns the predicted one; 255 is ignored.
    target = torch.tensor([[[0, 0, 1], [2, 255, 1]], [[255, 2, 2], [0, 1, 255]]], dtype=torch.uint8)
    pred = torch.tensor([[[0, 1, 1], [2, 0, 0]], [[1, 2, 0], [0, 1, 2]]], dtype=torch.uint8)
    # pairs (true, pred) of the 9 counted pixels: (0,0) (0,1) (1,1) (2,2) (1,0) (2,2) (2,0) (0,0) (1,1)
    expected = torch.tensor([[2, 1, 0],
                             [1, 2, 0],
                             [1, 0, 2]])
    got = confusion_matrix(pred, target, 3, 255)
    assert got.dtype == torch.int64
    assert torch.equal(got, expected)
    assert torch.equal(target, torch.tensor([[[0, 0, 1], [2, 255, 1]], [[255, 2, 2], [0, 1, 255]]],
                                            dtype=torch.uint8))  # the argument is not written
    scores = segmentation_scores(got)
    assert scores["pixel_acc"] == pytest.approx(6 / 9)
    # IoU per class: 2/(3+4-2), 2/(3+3-2), 2/(3+2-2)
    assert scores["miou"] == pytest.approx((2 / 5 + 2 / 4 + 2 / 3) / 3)


@pytest.mark.parametrize("chunk", [None, 7])
def test_same_scores_as_torchmetrics_gave(chunk, monkeypatch):
    from torchmetrics.classification import MulticlassConfusionMatrix

    if chunk:  # chunks of 7 pixels: the last one of each batch is partial (2 x 24 x 40 = 1920 = 274 x 7 + 2)
        monkeypatch.setattr(ae_pair, "CHUNK", chunk)

    g = torch.Generator().manual_seed(0)
    classes = len(CLASS_NAMES)
    pred = torch.randint(0, classes, (4, 24, 40), generator=g, dtype=torch.uint8)
    target = torch.randint(0, classes + 1, (4, 24, 40), generator=g, dtype=torch.uint8)
    target[target == classes] = VOID
    before = MulticlassConfusionMatrix(num_classes=classes, ignore_index=VOID, validate_args=False)
    mine = torch.zeros(classes, classes, dtype=torch.long)
    for i in range(0, 4, 2):  # accumulated over batches, as evaluate does
        before.update(pred[i : i + 2].long(), target[i : i + 2].long())
        mine += confusion_matrix(pred[i : i + 2], target[i : i + 2], classes, VOID)
    assert torch.equal(before.compute(), mine)
    assert segmentation_scores(before.compute()) == segmentation_scores(mine)


class LiveBytes(TorchDispatchMode):
    """Peak bytes of the storages the ops under it create and keep alive (inputs made before it
    are not counted; a view or an in-place result is not a new allocation)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.keys: set[int] = set()

    def _free(self, key: int, n: int) -> None:
        self.keys.discard(key)
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        given = {t.untyped_storage()._cdata for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage._cdata
                if key in given or key in self.keys:
                    continue
                n = storage.nbytes()
                self.keys.add(key)
                self.live += n
                self.peak = max(self.peak, self.live)
                weakref.finalize(storage, self._free, key, n)
        return out


@pytest.fixture
def deterministic():
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


LIMIT = 100 * 2**20


def test_extra_memory_of_a_full_batch_is_bounded(deterministic):
    """50 x 256 x 256 pixels, 19 classes + void, deterministic algorithms on: < 100 MB extra."""
    g = torch.Generator().manual_seed(0)
    classes = len(CLASS_NAMES)
    pred = torch.randint(0, classes, (50, 256, 256), generator=g, dtype=torch.uint8)  # what colours_to_ids gives
    target = torch.randint(0, classes + 1, (50, 256, 256), generator=g, dtype=torch.uint8)
    target[target == classes] = VOID
    with LiveBytes() as mem:
        counts = confusion_matrix(pred, target, classes, VOID)
    assert counts.sum() == (target != VOID).sum()
    assert mem.peak < LIMIT, f"{mem.peak / 2**20:.0f} MB"
    assert 50 * 256 * 256 > CHUNK  # the batch takes several chunks: the loop is exercised
    assert mem.peak >= CHUNK * 8  # the tracker sees the chunk's int64 index: it measures something


def test_torchmetrics_exceeded_the_bound_on_one_image(deterministic):
    """What this replaced: under deterministic algorithms torchmetrics needs more than 100 MB for a
    single 256 x 256 image (50 of them: about 10 GB)."""
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    g = torch.Generator().manual_seed(0)
    classes = len(CLASS_NAMES)
    pred = torch.randint(0, classes, (1, 256, 256), generator=g)
    target = torch.randint(0, classes, (1, 256, 256), generator=g)
    with LiveBytes() as mem:
        multiclass_confusion_matrix(pred, target, classes, ignore_index=VOID, validate_args=False)
    assert mem.peak > LIMIT
    assert mem.peak >= 256 * 256 * classes**2 * 8  # its pixels x classes² int64 table


def test_no_data_dependent_shape_and_no_host_read():
    """Under FakeTensorMode a tensor has no values: an op whose output shape depends on them
    (bincount's length is the input's max, read on the host; on CUDA, two syncs per batch) raises.
    The counts must come out as a fixed-size int64 classes x classes tensor without reading any."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    classes = len(CLASS_NAMES)
    with FakeTensorMode():
        pred = torch.empty(3, 40, 56, dtype=torch.uint8)
        target = torch.empty(3, 40, 56, dtype=torch.uint8)
        counts = confusion_matrix(pred, target, classes, VOID)
    assert counts.shape == (classes, classes) and counts.dtype == torch.int64
