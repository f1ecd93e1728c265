"""Retraining a genotype: the recipe, model checkpoints, export."""
