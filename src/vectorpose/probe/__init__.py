"""Linear probes of a frozen pretrained encoder: does it know where a crop is, how big and which way is up?

Zhang et al. (ISBI 2023) claim Vector Prediction makes the encoder spatially aware; this package
measures it directly (``vectorpose probe RUN DATA --out FILE``). One concept per module:
:mod:`.crops` (clean crops and their labels), :mod:`.split` (fit / evaluation cases),
:mod:`.features` (frozen encoder → pooled features), :mod:`.fit` (the scikit-learn probes),
:mod:`.runner` (``run_probe``) and :mod:`.report` (JSON, markdown, PNG).
"""

from .report import write_report
from .runner import ProbeConfig, ProbeResult, run_probe

__all__ = ["ProbeConfig", "ProbeResult", "run_probe", "write_report"]
