"""abaw-rt: deploy the TCN + Transformer audio-visual fusion model of Zhou et al. (ABAW5, CVPRW 2023).

Package root: kept free of heavy imports so that ``abaw-rt --help`` stays instant.
"""

__version__ = "0.1.0"

from abaw_rt.errors import AbawRtError

__all__ = ["AbawRtError", "__version__"]
