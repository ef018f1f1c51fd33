"""ament_python / pip package isr_training."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "isr_training"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/config", glob("config/*.yaml")),
        ("share/" + PACKAGE + "/launch", glob("launch/*.launch.py")),
    ],
    include_package_data=True,
    package_data={PACKAGE: ["config/*.yaml"]},
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="ISR workspace maintainers",
    maintainer_email="maintainers@isr-workspace.invalid",
    description="ISR task, vectorized environments, learners and the staged training pipeline.",
    license="Apache-2.0",
    python_requires=">=3.10",
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "train = isr_training.training_cli:main",
            "trainer_node = isr_training.trainer_node:main",
        ],
    },
)
