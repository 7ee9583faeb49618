"""FitNets' regressor: maps a student feature map to the teacher's channel count."""

from torch import nn


class FeatureRegressor(nn.Sequential):
    """1x1 conv + BN + ReLU (RepDistiller's ``ConvReg`` for maps of equal size; the teacher's maps it
    imitates come after a ReLU too). It belongs to the training run, not to the student."""

    def __init__(self, student_shape, teacher_shape):
        s_c, s_h, s_w = student_shape[-3:]
        t_c, t_h, t_w = teacher_shape[-3:]
        if (s_h, s_w) != (t_h, t_w):
            raise ValueError(f"FitNets here needs maps of equal size: student {s_h}x{s_w}, teacher {t_h}x{t_w}")
        super().__init__(nn.Conv2d(s_c, t_c, kernel_size=1), nn.BatchNorm2d(t_c), nn.ReLU(inplace=True))
