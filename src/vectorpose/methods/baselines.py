"""The baselines every pretraining method is measured against.

- ``scratch``: no pretraining; the segmentation network starts from its random initialisation.
- ``genesis``: Models Genesis restoration (Zhou et al., MICCAI 2019 / MedIA 2021): restore the crop
  from the same corruptions VectorPOSE uses (local shuffle, non-linear intensity, in- and
  out-painting), with no boundary map and no vectors. The restoration loss is the same L1 term as in
  ``bfr`` (the original used L2), so ``genesis`` against ``bfr`` isolates the boundary map.
"""

from .base import PretextMethod, register

SCRATCH = register(PretextMethod("scratch", "no pretraining (random initialisation)", pretrains=False))
GENESIS = register(PretextMethod("genesis", "Models Genesis restoration (same corruptions, reconstruction loss only)",
                                 reconstruction_weight=1.0))
