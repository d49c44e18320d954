"""clip2_ros: the ROS 2 adapter around clip2_core (node, message conversions, bag tools)."""
