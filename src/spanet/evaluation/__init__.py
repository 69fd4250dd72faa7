"""Distances, k-reciprocal re-ranking and ranking metrics (CMC, mAP, mINP)."""
