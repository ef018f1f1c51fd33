"""ROS 2 node ``sim_bridge``: the embedded world and tiled camera on ROS topics.

Per drone ``i`` it subscribes the vehicle state ``nav_msgs/Odometry`` on ``state_topic``
(published by ``direct_dynamics_node`` in fast mode, or by ``px4_eval_node`` from PX4's
``VehicleOdometry`` in full-fidelity mode) and, at ``render_rate_hz``, renders every drone in one
batched call and publishes ``sensor_msgs/Image`` (rgb8) + ``sensor_msgs/CameraInfo``,
``vision_msgs/Detection2DArray`` (ground-truth boxes) and the ``nav_msgs/Odometry`` the frame was
rendered from (``render_odom_topic``, so a bag pairs each image with its pose). Drones whose
state has not arrived yet are not rendered.

Messages are built by :mod:`isr_sim_bridge.rosmsg` with :class:`~isr_sim_bridge.rosmsg.RclpyFactory`
(the same builders write the bags); images go through ``cv_bridge`` where it imports. Every
message of a render is stamped with the time of the odometry it was rendered from (simulated time
when the state comes from an embedded run or the trainer's live view), else the node's clock.
rclpy is imported only when the node is built.
"""

from __future__ import annotations

from typing import Any

from isr_direct_dynamics.ros_node import run_node

DEFAULT_PARAMETERS: dict[str, Any] = {
    "num_drones": 4,
    "world_seed": 0,
    "resolution": "evaluation",
    "render_rate_hz": 10.0,
    "device": "cpu",
    "state_topic": "/drone_{i}/odom",
    "image_topic": "/drone_{i}/camera/image_raw",
    "camera_info_topic": "/drone_{i}/camera/camera_info",
    "detections_topic": "/drone_{i}/detections",
    "render_odom_topic": "/drone_{i}/camera/odom",
    "frame_id": "map",
    "camera_frame_id": "drone_{i}/camera_optical",
}
"""Parameters and their defaults (also in ``config/sim_bridge.yaml``)."""


def make_node_class() -> type:
    """The rclpy ``Node`` subclass (imports rclpy)."""
    import numpy as np
    import torch
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data

    from isr_direct_dynamics.ros_node import declare_parameters

    from . import rosmsg
    from .camera import CameraConfig, TiledCamera
    from .detections import GroundTruthDetector
    from .world import WorldSpec, generate_worlds
    from .world_batch import TARGET_CLASSES

    class SimBridgeNode(Node):
        """Renders the drones' camera views and ground-truth detections."""

        def __init__(self) -> None:
            super().__init__("sim_bridge")
            self.p = p = declare_parameters(self, DEFAULT_PARAMETERS)
            n = int(p["num_drones"])
            self.f = rosmsg.RclpyFactory()
            world = generate_worlds(WorldSpec(), [int(p["world_seed"])], p["device"])
            cam_cfg = CameraConfig(resolution=p["resolution"])
            det = GroundTruthDetector(world, cam_cfg, device=p["device"])
            self.camera = TiledCamera(world, n, cam_cfg, p["device"], detector=det)
            self.pos = torch.zeros(1, n, 3)
            self.quat = torch.zeros(1, n, 4)
            self.quat[..., 0] = 1.0
            self.have_state = [False] * n
            self.last_odom: list[Any] = [None] * n
            qos = qos_profile_sensor_data
            self.subs = [
                self.create_subscription(
                    self.f("nav_msgs/msg/Odometry"),
                    p["state_topic"].format(i=i),
                    lambda msg, i=i: self.on_state(i, msg),
                    qos,
                )
                for i in range(n)
            ]

            def pubs(key: str, msgtype: str) -> list[Any]:
                return [
                    self.create_publisher(self.f(msgtype), p[key].format(i=i), qos)
                    for i in range(n)
                ]

            self.image_pubs = pubs("image_topic", "sensor_msgs/msg/Image")
            self.info_pubs = pubs("camera_info_topic", "sensor_msgs/msg/CameraInfo")
            self.det_pubs = pubs("detections_topic", "vision_msgs/msg/Detection2DArray")
            self.odom_pubs = pubs("render_odom_topic", "nav_msgs/msg/Odometry")
            self.timer = self.create_timer(1.0 / float(p["render_rate_hz"]), self.on_render)
            self.bridge = None  # the design card's cv_bridge where it works; else the builder
            try:
                from cv_bridge import CvBridge

                bridge = CvBridge()
                bridge.cv2_to_imgmsg(np.zeros((2, 2, 3), np.uint8), encoding="rgb8")
                self.bridge = bridge
            except Exception as exc:  # e.g. a cv_bridge built against another NumPy major
                self.get_logger().warning(
                    f"cv_bridge unusable here ({type(exc).__name__}: {exc}); images are built "
                    "by isr_sim_bridge.rosmsg (the same sensor_msgs/Image, rgb8)"
                )
            self.get_logger().info(
                f"rendering {n} drone(s) of world {p['world_seed']} at {p['render_rate_hz']} Hz "
                f"({'cv_bridge' if self.bridge is not None else 'rosmsg'} images)"
            )

        def image(self, rgb: np.ndarray, t_s: float, frame: str) -> Any:
            """``sensor_msgs/Image`` rgb8 (cv_bridge where it imports)."""
            if self.bridge is None:
                return rosmsg.image_msg(self.f, rgb, t_s, frame)
            msg = self.bridge.cv2_to_imgmsg(np.ascontiguousarray(rgb), encoding="rgb8")
            msg.header = rosmsg.header_msg(self.f, t_s, frame)
            return msg

        def on_state(self, i: int, msg: Any) -> None:
            """Keep drone ``i``'s newest pose."""
            pp, o = msg.pose.pose.position, msg.pose.pose.orientation
            self.pos[0, i] = torch.tensor([pp.x, pp.y, pp.z])
            self.quat[0, i] = torch.tensor([o.w, o.x, o.y, o.z])
            self.last_odom[i] = msg
            self.have_state[i] = True

        def on_render(self) -> None:
            """Render all drones once; publish per drone."""
            if not any(self.have_state):
                return
            out = self.camera.render(self.pos, self.quat)
            now_s = self.get_clock().now().nanoseconds * 1e-9
            rgb = out.rgb[0].contiguous().cpu().numpy()
            det = out.detections
            cam = self.camera
            for i in range(len(self.have_state)):
                if not self.have_state[i]:
                    continue
                frame = self.p["camera_frame_id"].format(i=i)
                odom = self.last_odom[i]
                t_s = rosmsg.stamp_to_sec(odom.header.stamp) if odom is not None else now_s
                self.image_pubs[i].publish(self.image(rgb[i], t_s, frame))
                self.info_pubs[i].publish(
                    rosmsg.camera_info_msg(
                        self.f, cam.width_px, cam.height_px,
                        cam.config.horizontal_fov_deg, t_s, frame,
                    )
                )  # fmt: skip
                if det is not None:
                    vis = det.visible[0, i].cpu().numpy()
                    boxes = det.boxes_xyxy[0, i].cpu().numpy()[vis]
                    cls = det.class_id[0, i].cpu().numpy()[vis]
                    ids = det.target_id[0, i].cpu().numpy()[vis]
                    self.det_pubs[i].publish(
                        rosmsg.detection2d_array_msg(
                            self.f, boxes, [TARGET_CLASSES[c] for c in cls], t_s, frame,
                            scores=np.ones(len(cls)), target_ids=ids,
                        )
                    )  # fmt: skip
                if self.last_odom[i] is not None:
                    self.odom_pubs[i].publish(self.last_odom[i])

    return SimBridgeNode


def main(args: list[str] | None = None) -> None:
    """Console script ``sim_bridge_node``."""
    run_node(make_node_class(), args)


__all__ = ["DEFAULT_PARAMETERS", "main", "make_node_class"]
