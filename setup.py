"""pip side of the sop_ros package (colcon ignores this file and uses CMakeLists.txt).

The distribution is named `sop_ros_python`, not `sop_ros`: rosidl installs an egg-info
named sop_ros, and pip would uninstall the generated interfaces otherwise (packaging
spike, pitfall P3). Direct dependencies are pinned in requirements/*.txt (also used by
full-ROS installs); requirements/constraints.txt pins the whole tree so a fresh setup
is reproducible and never pulls another torch.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def requirements(name: str) -> list[str]:
    lines = (HERE / "requirements" / f"{name}.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


setup(
    name="sop_ros_python",
    version="0.1.0",
    description="SOP-ROS: online post-training of VLA policies across a ROS 2 fleet",
    packages=find_packages(include=["sop_ros", "sop_ros.*"]),
    # The shipped base policy (sop_ros/resources.shipped_base_policy_dir); CMake installs all of sop_ros/.
    package_data={"sop_ros": ["base_policy/*.safetensors", "base_policy/*.json", "base_policy/*.md"]},
    python_requires=">=3.10",
    install_requires=requirements("runtime"),
    extras_require={"ros": requirements("ros"), "test": requirements("test")},
    entry_points={"console_scripts": ["sop = sop_ros.cli:main"]},
)
