"""ament_python / pip package isr_sim_bridge."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "isr_sim_bridge"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/config", glob("config/*.yaml")),
    ],
    include_package_data=True,
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="ISR workspace maintainers",
    maintainer_email="maintainers@isr-workspace.invalid",
    description=(
        "Embedded ISR world, batched tiled camera, ground-truth and YOLO perception, "
        "rosbag2 recording."
    ),
    license="Apache-2.0",
    python_requires=">=3.10",
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "sim_bridge_node = isr_sim_bridge.sim_bridge_node:main",
        ],
    },
)
