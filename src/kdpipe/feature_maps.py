"""Sizes of feature maps, without torch: which integer pooling brings two maps to one size.

Attention transfer compares a student's and a teacher's maps stage by stage. ``kdpipe.losses``
pools them at every step; the config check (``kdpipe.config_checks``) asks the same question of
the registered stage shapes before any job starts, so it must not need torch.
"""


def pooling_factors(size_a: tuple[int, ...], size_b: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Integer average-pooling kernels (one per spatial dim) that bring maps of these spatial sizes to
    the smaller of each dim; None when a larger size is not a multiple of the smaller one."""
    kernels_a, kernels_b = [], []
    for a, b in zip(size_a, size_b):
        small = min(a, b)
        if a % small or b % small:
            return None
        kernels_a.append(a // small)
        kernels_b.append(b // small)
    return tuple(kernels_a), tuple(kernels_b)
