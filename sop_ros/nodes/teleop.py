"""Teleop node: a joystick (sensor_msgs/Joy, as joy_node publishes it) commands the arm via the mux.

Once per control tick, while the deadman button is held and the joystick has spoken within
`joy_timeout_s`, it sends the action mapped from the latest Joy reading (axis/button mapping in
config/teleop.yaml) as a HumanCommand; each reading is sent at most once. On deadman release or
joystick silence it stops sending, and the action mux hands control back to the policy.
A managed node (sop_ros/nodes/_lifecycle.py): it reads and commands only while active.
"""

from __future__ import annotations

import time

from sensor_msgs.msg import Joy

from sop_ros.core.robot.teleop import JoyMapping, TeleopState
from sop_ros.msg import HumanCommand
from sop_ros.nodes import _qos
from sop_ros.nodes._convert import stamp_ns, time_msg
from sop_ros.nodes._defaults import NON_NEGATIVE, PERIOD_S, RATE_HZ, Params
from sop_ros.nodes._lifecycle import ManagedNode
from sop_ros.nodes._runtime import run_nodes


class TeleopNode(ManagedNode):
    def __init__(self, **kwargs):
        super().__init__("teleop", **kwargs)
        p = Params(self, "teleop", "teleop.yaml")
        self.rate_hz = p("control_rate_hz", "commands per second at most (the control rate)", value_range=RATE_HZ)
        mapping = JoyMapping(
            deadman_button=p(
                "deadman_button", "button index that must be held for the human to command", value_range=NON_NEGATIVE
            ),
            axis_map=tuple(p("axis_map", "Joy axis index per action dimension (-1 = 0)")),
            axis_scale=tuple(float(v) for v in p("axis_scale", "gain/sign per action dimension")),
            deadzone=p("deadzone", "|axis| below this reads as 0", value_range=(0.0, 0.99)),
            gripper_close_button=p(
                "gripper_close_button",
                "held = close the gripper (+1), else open (-1); -1 = use axis_map",
                value_range=(-1, None),
            ),
        )
        joy_timeout_s = p("joy_timeout_s", "joystick silence after which control is handed back", value_range=PERIOD_S)
        self._mapping, self._joy_timeout_s = mapping, joy_timeout_s

    def configure(self) -> None:
        self.state = TeleopState(self._mapping, self._joy_timeout_s)
        self._human_active = False
        self.command_pub = self.managed_publisher(HumanCommand, "intervention/command", _qos.CONTROL)
        self.managed_subscription(Joy, "joy", self._on_joy, _qos.SENSOR)
        self.managed_timer(1.0 / self.rate_hz, self._tick)

    def _on_joy(self, msg: Joy) -> None:
        stamp = stamp_ns(msg.header.stamp) or time.time_ns()
        self.state.on_joy(list(msg.axes), list(msg.buttons), stamp, time.monotonic_ns())
        if not self._human_active and self.state.deadman_held:
            # The press is sent at once, not at the next timer tick: the human takes over a tick sooner.
            self._tick()

    def _tick(self) -> None:
        command = self.state.command(time.monotonic_ns())
        if self.state.active != self._human_active:
            self._human_active = self.state.active
            self.get_logger().info(
                f"{'human commands' if self._human_active else 'handing back'}: {self.state.last_change_reason}"
            )
        if command is None:
            return
        msg = HumanCommand(action=command.action.tolist(), source="teleop", reason=command.reason or "teleop")
        # Stamped when sent: the mux executes it only for a tick after the previous one it executed.
        msg.header.stamp = time_msg(time.time_ns())
        self.command_pub.publish(msg)


def main(args=None) -> int:
    return run_nodes([TeleopNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
