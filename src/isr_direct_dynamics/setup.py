"""ament_python / pip package isr_direct_dynamics."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "isr_direct_dynamics"

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
        "Batched vehicle models: direct (first-order velocity) dynamics for training and "
        "a 6-DoF quadrotor flown by a PX4-like controller for evaluation."
    ),
    license="Apache-2.0",
    python_requires=">=3.10",
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "bench_dynamics = isr_direct_dynamics.cli:bench_main",
            "direct_dynamics_node = isr_direct_dynamics.direct_dynamics_node:main",
        ],
        "pytest11": ["isr_testing = isr_direct_dynamics.testing"],
    },
)
