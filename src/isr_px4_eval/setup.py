"""ament_python / pip package isr_px4_eval."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "isr_px4_eval"

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
    description=(
        "Full-fidelity evaluation (PX4 over uXRCE-DDS or the embedded quadrotor), parity, "
        "dynamics tuning and the `isr` command line."
    ),
    license="Apache-2.0",
    python_requires=">=3.10",
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "isr = isr_px4_eval.cli.main:main",
            "px4_eval = isr_px4_eval.cli.eval:main",
            "px4_eval_node = isr_px4_eval.nodes.eval_node:main",
            "px4_emulator_node = isr_px4_eval.nodes.emulator_node:main",
        ],
    },
)
