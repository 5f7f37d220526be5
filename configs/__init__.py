"""Presets of train.py: one file per dataset, each starting from `common.paper_recipe()`."""
