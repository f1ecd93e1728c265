"""Training losses: label-smoothing CE, batch-hard triplet, center loss and the RIB IB bound."""

from .center import CenterLoss
from .identity import CrossEntropyLabelSmooth
from .kmeans import kmeans
from .rib import RIBLoss, mutual_information, soft_assign
from .triplet import TripletLoss, pairwise_euclidean

__all__ = [
    "CenterLoss",
    "CrossEntropyLabelSmooth",
    "RIBLoss",
    "TripletLoss",
    "kmeans",
    "mutual_information",
    "pairwise_euclidean",
    "soft_assign",
]
