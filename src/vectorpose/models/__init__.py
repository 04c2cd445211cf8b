"""Networks: the 3D U-Net backbone shared by pretraining and segmentation, and the task heads."""
