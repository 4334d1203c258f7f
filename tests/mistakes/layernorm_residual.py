"""More wrong answers for notebook 07 that its graded cells must reject (not named by hints)."""

import torch

from course_lib.checks import Mistake
from course_lib.exercises.layernorm_residual import _LayerNorm, _Residual, _RMSNorm


class _LayerNormStd(_LayerNorm):
    def normalise(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        return (x - mean) / (x.std(dim=-1, keepdim=True) + self.eps)


class _LayerNormNoEps(_LayerNorm):
    def normalise(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        return (x - mean) / x.var(dim=-1, keepdim=True, unbiased=False).sqrt()


class _RMSNormAbsMean(_RMSNorm):
    def normalise(self, x):
        return x / (x.abs().mean(dim=-1, keepdim=True) + self.eps)


class _RMSNormAllAxes(_RMSNorm):
    def normalise(self, x):
        return x / torch.sqrt(x.pow(2).mean() + self.eps)


class _ResidualDropsArguments(_Residual):
    def forward(self, x, *args, **kwargs):
        return super().forward(x)


class _ResidualAlwaysPre(_Residual):
    def forward(self, x, *args, **kwargs):
        return self.pre(x, *args, **kwargs)


EXTRA_MISTAKES = {
    "layer_norm": [
        Mistake("unbiased std with eps outside", "", _LayerNormStd),
        Mistake("no eps", "", _LayerNormNoEps),
    ],
    "rms_norm": [
        Mistake("mean absolute value", "", _RMSNormAbsMean),
        Mistake("one statistic for the whole tensor", "", _RMSNormAllAxes),
    ],
    "residual": [
        Mistake("extra arguments not passed on", "", _ResidualDropsArguments),
        Mistake("norm_first ignored", "", _ResidualAlwaysPre),
    ],
}
