"""Where the real data sets come from. Kept free of heavy imports: the workflow reads it at load time."""

# Official archives (torchvision/datasets/cifar.py); a config may point at a mirror instead.
CIFAR = {
    "cifar10": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": ("batches.meta", "label_names"),
        "label_key": "labels",
        "num_classes": 10,
        "train_per_class": 5000,
    },
    "cifar100": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": ("meta", "fine_label_names"),
        "label_key": "fine_labels",
        "num_classes": 100,
        "train_per_class": 500,
    },
}

# kdpipe.data.synthetic.generate's default number of classes (a test keeps the two equal); here so
# config checks know a synthetic set's class sizes without importing torch.
SYNTHETIC_NUM_CLASSES = 10
