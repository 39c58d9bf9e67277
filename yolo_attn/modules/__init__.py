"""Block implementations, one file per family. Class import paths are part of the checkpoint format: keep them.

- attention.py: CA, SimAM, CBAM, MS-CAM
- channel.py: SE-style channel attention (SE, ECA, GAM, GC, scSE, BAM) and the shared SE MLP
- spatial.py: spatial / context attention (Triplet, Strip Pooling, LKA / VAN, STN, Residual Attention)
- selfattn.py: non-local style self-attention (DANet PAM / CAM / DABlock, Polarized SA, RGA, FAN channel attention)
- fusion.py: multi-input fusion (ASFF, AFF, iAFF, BiFPN_Concat)
- cascade.py: Cascade Fusion Network focal block and transition
- conv.py: convolution replacements (SPD-Conv, DCNv2)
- composite.py: C2f / C3k2 whose bottlenecks end in a block (C2f_CBAM, C3k2_SE, ...)
- dynconv.py: dynamic / re-parameterised / mixed convolutions (ODConv, RefConv, SCConv, ACmix)
- grouped.py: grouped / multi-branch attention (EMA, Shuffle Attention, SKNet's selective kernel)
- local.py: local attention with 1-D or depth-wise convolutions (ELA, MLCA, CPCA)
- largekernel.py: large receptive fields (LSKA, LSKNet's LSK module, WTConv)
- reconstruct.py: ScConv (spatial and channel reconstruction, CVPR 2023; not SCConv)
- mobile.py: efficient mobile blocks (PConv, FasterNet block, C2f_Faster, StarBlock, C2f_Star, iRMB)
- slimneck.py: Slim-neck (GSConv, GS bottleneck, VoV-GSCSP)
- rfa.py: receptive-field attention convolutions (RFAConv, RFCBAMConv, RFCAConv)
- upsample.py: content-aware upsamplers (DySample, CARAFE)
"""

from .attention import CA, CBAM, MSCAM, CBAMChannelAttention, CBAMSpatialAttention, SimAM
from .cascade import CFNetFocal, CFNetTransition
from .channel import BAM, ECA, GAM, SE, SEMLP, GCBlock, scSE
from .composite import BlockBottleneck, C2fWith, C3k2With
from .conv import DCN, SPD, C2f_DCN, DCNBottleneck, SPDConv
from .dynconv import ACmix, ODConv, RefConv, SCConv
from .fusion import AFF, ASFF, BiFPN_Concat, iAFF
from .grouped import EMA, SKAttention, ShuffleAttention
from .largekernel import LSKA, LSKA_KERNELS, WTConv, LSKBlock
from .local import CPCA, ELA, MLCA
from .mobile import PConv, FasterBlock, C2f_Faster, StarBlock, C2f_Star, iRMB
from .reconstruct import ScConv
from .rfa import RFAConv, RFCAConv, RFCBAMConv
from .slimneck import GSBottleneck, GSConv, VoVGSCSP
from .upsample import CARAFE, DySample
from .selfattn import CAM, PAM, RGA, RGA_C, RGA_S, DABlock, FANChannelAttention, PSA_p, PSA_s
from .spatial import STN, LKA, ResidualAttention, StripPooling, TripletAttention, VANAttention

__all__ = (
    "CA", "SimAM", "CBAM", "CBAMChannelAttention", "CBAMSpatialAttention", "MSCAM",
    "SE", "SEMLP", "ECA", "GAM", "GCBlock", "scSE", "BAM",
    "TripletAttention", "StripPooling", "LKA", "VANAttention", "STN", "ResidualAttention",
    "PAM", "CAM", "DABlock", "PSA_p", "PSA_s", "RGA_S", "RGA_C", "RGA", "FANChannelAttention",
    "ASFF", "AFF", "iAFF",
    "CFNetFocal", "CFNetTransition",
    "SPD", "SPDConv", "DCN", "DCNBottleneck", "C2f_DCN",
    "BlockBottleneck", "C2fWith", "C3k2With",
    "ODConv", "RefConv", "SCConv", "ACmix",
    "BiFPN_Concat", "EMA", "ShuffleAttention", "SKAttention", "ELA", "MLCA", "CPCA", "LSKA", "LSKA_KERNELS", "LSKBlock",
    "WTConv", "ScConv", "PConv", "FasterBlock", "C2f_Faster", "StarBlock", "C2f_Star", "iRMB", "GSConv", "GSBottleneck",
    "VoVGSCSP", "RFAConv", "RFCBAMConv", "RFCAConv", "DySample", "CARAFE",
)  # fmt: skip
