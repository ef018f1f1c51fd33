# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
# Both create the virtualenv .venv if it is missing and install everything once; re-running them
# on a set-up machine reinstalls nothing (the stamp file tracks the inputs).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.isr-installed
PKGS   := src/isr_direct_dynamics src/isr_sim_bridge src/isr_training src/isr_px4_eval
TORCH  ?= torch==2.13.0

.PHONY: setup demo showcase test lint bench clean-venv colcon ros

setup: $(STAMP)

$(STAMP): requirements.txt $(wildcard src/*/setup.py)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	# torch first: a CPU build (from the local wheel where there is one), so that no other
	# requirement pulls several GB of CUDA packages.
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation $(foreach p,$(PKGS),-e $(p))
	touch $(STAMP)

# The quick pipeline: train -> full-fidelity evaluation -> parity -> bags -> videos -> report,
# in experiments/demo_<YYYYmmdd_HHMMSS>/ (minutes on 2 CPU cores).
demo: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/isr pipeline demo --preset quick

# The one-minute tour of the building blocks (step responses, 16 drone views, baselines).
showcase: $(STAMP)
	$(VENV)/bin/isr demo

test: $(STAMP)
	$(VENV)/bin/ruff check src $(wildcard launch scripts)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/isr bench dynamics --model direct --drones 65536 --json
	$(VENV)/bin/isr bench dynamics --model quadrotor --drones 4096 --json

# Build the ament_python packages with colcon (no ROS needed; isr_msgs needs rosidl, see README).
colcon: $(STAMP)
	$(PY) -m pip install -q colcon-common-extensions
	. $(VENV)/bin/activate && colcon build --packages-skip isr_msgs && colcon test --packages-skip isr_msgs && colcon test-result --verbose

# The ROS 2 workspace: colcon build of all five packages (isr_msgs with rosidl) against a ROS 2
# Humble installation, with the workspace's own interpreter (the .venv: torch, numba, ...), into
# $(ROS_WS)/{build,install,log}; then `source $(ROS_WS)/install/setup.bash` and `ros2 launch ...`.
# rosidl in Humble needs empy 3.x (colcon-common-extensions pulls empy 4: pinned back here), and
# CMake gets -DPYTHON_EXECUTABLE so that FindPythonExtra takes the same interpreter.
# --symlink-install: the nodes import the source tree, whose numba cache the tests already filled.
ROS_SETUP  ?= /opt/ros/humble/setup.bash
ROS_WS     ?= $(CURDIR)
ROS_PYTHON ?= $(CURDIR)/$(PY)
ros: $(STAMP)
	@test -f "$(ROS_SETUP)" || { echo "error: ROS 2 setup script '$(ROS_SETUP)' not found (make ros ROS_SETUP=/path/to/setup.bash)" >&2; exit 2; }
	$(ROS_PYTHON) -m pip install -q colcon-common-extensions lark catkin_pkg
	$(ROS_PYTHON) -m pip install -q "empy==3.3.4"
	bash -c 'set -e; source "$(ROS_SETUP)"; cd "$(CURDIR)"; \
	  "$(dir $(ROS_PYTHON))colcon" --log-base "$(ROS_WS)/log" build --symlink-install --base-paths src \
	    --build-base "$(ROS_WS)/build" --install-base "$(ROS_WS)/install" \
	    --cmake-args -DPYTHON_EXECUTABLE="$(ROS_PYTHON)" -DBUILD_TESTING=OFF; \
	  source "$(ROS_WS)/install/setup.bash"; \
	  ros2 pkg executables | grep "^isr_"'

clean-venv:
	rm -rf $(VENV)
