"""Joystick publisher: a game controller via pygame (SDL2) -> sensor_msgs/Joy on `joy`.

For installs without the ROS joy package; publishes what joy_node publishes so the teleop node
cannot tell them apart: axes in [-1, 1] with joy_node's sign (SDL's value negated: stick up or
left = +1), then two axes per hat (x, y), and buttons as 0/1, at `rate_hz` (joy_node's
autorepeat). No window is opened (SDL's dummy video driver). Without a device it logs a clear
"waiting" message, keeps checking once a second (hot-plug) and publishes nothing, so the teleop
node sees silence and never gives a human control from a stale reading. A managed node
(sop_ros/nodes/_lifecycle.py): the SDL thread runs from activate until deactivate joins it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Optional

from sensor_msgs.msg import Joy

from sop_ros.nodes import _qos
from sop_ros.nodes._convert import time_msg
from sop_ros.nodes._defaults import NON_NEGATIVE, RATE_HZ, Params
from sop_ros.nodes._lifecycle import ManagedNode
from sop_ros.nodes._runtime import run_nodes

_WAIT_S = 1.0


def joy_message(
    axes: Sequence[float], buttons: Sequence[int], hats: Sequence[tuple[int, int]], stamp_ns: int, frame_id: str
) -> Joy:
    """One joystick reading (pygame's conventions) as the Joy message joy_node would publish."""
    msg = Joy()
    msg.header.stamp = time_msg(stamp_ns)
    msg.header.frame_id = frame_id
    values = [max(-1.0, min(1.0, -float(a))) for a in axes]
    for hx, hy in hats:
        values += [float(-hx), float(hy)]  # joy_node: hat left = +1 on x, up = +1 on y
    msg.axes = values
    msg.buttons = [1 if b else 0 for b in buttons]
    return msg


class JoystickNode(ManagedNode):
    def __init__(self, **kwargs):
        super().__init__("joystick", **kwargs)
        p = Params(self, "joystick", "teleop.yaml")
        self.device_index = p("device_index", "SDL joystick index to read", value_range=NON_NEGATIVE)
        rate = p("rate_hz", "Joy messages per second while a device is connected", value_range=RATE_HZ)
        self.frame_id = p("frame_id", "frame_id of the Joy messages")
        self.period_s = 1.0 / rate
        self.messages_published = 0

    def configure(self) -> None:
        self.joy_pub = self.managed_publisher(Joy, "joy", _qos.SENSOR)
        # SDL wants its event pump on the thread that initialised it: one thread owns pygame.
        self.sdl = self.managed_worker("sdl_joystick", self._run)

    def _run(self, stop: threading.Event) -> None:
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # never open a window
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        import pygame  # imported here: its import prints and initialises SDL state

        try:
            pygame.display.init()
            pygame.joystick.init()
        except pygame.error as exc:
            self.get_logger().error(f"SDL could not be initialised ({exc}); no joystick input")
            return
        joystick: Optional[pygame.joystick.JoystickType] = None
        waiting_logged = False
        try:
            while not stop.is_set():
                pygame.event.pump()  # refreshes device state and hot-plug
                if joystick is None:
                    count = pygame.joystick.get_count()
                    if self.device_index >= count:
                        if not waiting_logged:
                            self.get_logger().warning(
                                f"no joystick at device index {self.device_index} ({count} connected): "
                                "waiting for one to be connected; publishing nothing until then"
                            )
                            waiting_logged = True
                        stop.wait(_WAIT_S)
                        continue
                    joystick = pygame.joystick.Joystick(self.device_index)
                    joystick.init()
                    waiting_logged = False
                    self.get_logger().info(
                        f"joystick {joystick.get_name()!r}: {joystick.get_numaxes()} axes, "
                        f"{joystick.get_numbuttons()} buttons, {joystick.get_numhats()} hats"
                    )
                try:
                    reading = (
                        [joystick.get_axis(i) for i in range(joystick.get_numaxes())],
                        [joystick.get_button(i) for i in range(joystick.get_numbuttons())],
                        [joystick.get_hat(i) for i in range(joystick.get_numhats())],
                    )
                except pygame.error as exc:
                    self.get_logger().error(f"joystick lost ({exc}); waiting for it to come back")
                    joystick = None
                    continue
                self.joy_pub.publish(joy_message(*reading, self.get_clock().now().nanoseconds, self.frame_id))
                self.messages_published += 1
                stop.wait(self.period_s)
        finally:
            pygame.joystick.quit()
            pygame.display.quit()


def main(args=None) -> int:
    return run_nodes([JoystickNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
