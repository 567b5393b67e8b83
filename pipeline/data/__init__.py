"""Data sets: the LightningDataModule and the synthetic, digits and csv sets (sets), the image
readers in torchvision's file layouts (images), and the one-time download (fetch)."""
