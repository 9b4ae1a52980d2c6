"""On-disk datasets (demonstrations) and their loaders."""

from vlarl.data.dataset import DemoDataset, DemoWriter

__all__ = ["DemoDataset", "DemoWriter"]
