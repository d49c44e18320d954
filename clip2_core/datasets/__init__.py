"""Datasets: nuScenes frames and GT crops (``clip2_core.datasets.nuscenes``) and the synthetic
nuScenes-format world generator (``clip2_core.datasets.synth``). Submodules import their heavy
dependencies (nuscenes-devkit, PIL) lazily.
"""
