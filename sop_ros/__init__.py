"""sop_ros: online post-training of VLA robot policies across a ROS 2 fleet.

The generated interfaces (sop_ros.msg, sop_ros.srv) are installed by CMake into
site-packages, the hand-written code lives in this checkout; extend_path merges both
directories so either can come first on sys.path (packaging-spike P5). Keep this file
free of imports of generated code.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
