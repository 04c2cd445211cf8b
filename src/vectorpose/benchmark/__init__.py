"""The label-efficiency benchmark: pretraining methods compared under one fine-tuning recipe."""
