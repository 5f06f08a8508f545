"""LeRobot v3.0 datasets in and out of sop_ros episodes (ROS-free; pyarrow + PyAV): `sop dataset export/import`."""
