"""``mae``: masked image modelling for the same CNN, the alternative most users would pick today.

The idea (masked autoencoders carried over to convolutional networks: SparK, and "Revisiting MAE
pre-training for 3D medical image segmentation", the recipe nnU-Net's self-supervised companion
recommends for CNNs): hide random blocks of the crop and train the encoder-decoder to reconstruct
them, scoring only the hidden voxels. Our version, for the dense U-Net every other method trains:

- input: the clean crop with a fraction of the blocks of a regular grid filled with the mean of the
  visible voxels (block side and fraction: ``PretrainConfig.masking``, see
  :mod:`~vectorpose.pretext.masking`; defaults 4 voxels at patch 32 and 0.6). No sparse convolutions:
  the network convolves over the filled blocks, as dense-CNN MAE variants do.
- target and head: the clean crop in ``[0, 1]``, through the same sigmoid voxel head as ``genesis``.
- loss: mean squared error over the hidden voxels only (:func:`~vectorpose.losses.masked.masked_mse`).
- augmentation: none of Models Genesis's corruptions (masking is the corruption; adding them would
  mix two pretext tasks). The crop stream is the one every method draws: random position and scale,
  and the flips and 90° rotations of ``--flip-prob`` / ``--rotate``. We keep those so that, as the
  benchmark promises, ``mae``, ``genesis`` and ``vectorpose`` see the same crops for one seed and
  differ only in the objective; ``--flip-prob 0 --no-rotate`` gives the plain MAE recipe.
"""

from .base import PretextMethod, register

MAE = register(PretextMethod("mae", "masked image modelling (reconstruct randomly masked blocks; MSE on the masked voxels)",
                             reconstruction_weight=1.0, masked_input=True))
