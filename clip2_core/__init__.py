"""clip2_core: the ROS-agnostic CLIP2 library (geometry, segmentation, encoders, mining, training, evaluation).

Importing this package is cheap and never imports ROS, torch or other heavy back-ends;
submodules import what they need.
"""
__version__ = "0.1.0"
