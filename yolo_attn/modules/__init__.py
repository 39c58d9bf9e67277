"""Block implementations, one file per kind. Class import paths are part of the checkpoint format: keep them."""

from .attention import CA, CBAM, MSCAM, CBAMChannelAttention, CBAMSpatialAttention, SimAM
from .conv import DCN, SPD, C2f_DCN, DCNBottleneck, SPDConv
from .fusion import AFF, ASFF, iAFF

__all__ = (
    "CA",
    "SimAM",
    "CBAM",
    "CBAMChannelAttention",
    "CBAMSpatialAttention",
    "MSCAM",
    "ASFF",
    "AFF",
    "iAFF",
    "SPD",
    "SPDConv",
    "DCN",
    "DCNBottleneck",
    "C2f_DCN",
)
