"""An example third-party Workbench plugin: k-means weight clustering, written only against workbench.plugin."""

from .job import WeightClusteringJob, cluster_tensor

__all__ = ["WeightClusteringJob", "cluster_tensor"]
