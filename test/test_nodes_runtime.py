"""run_nodes: a SIGINT that lands while callbacks publish is a clean shutdown, with nothing on stderr."""

import signal
import subprocess
import sys
import time

import pytest
from conftest import PEERS, ros_env

pytestmark = pytest.mark.timeout(180)


def test_sigint_during_publishing_callbacks_exits_zero_without_unretrieved_errors():
    # Without collecting the callbacks that failed at shutdown, about every other run printed rclpy's
    # "The following exception was never retrieved: Failed to publish: publisher's context is invalid".
    # While SIGINT still raised KeyboardInterrupt in the main thread, it once (1 run in ~20) landed inside
    # an rclpy Task's constructor: "Exception ignored in: <function Future.__del__ ...> AttributeError".
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, str(PEERS / "publishing_flood.py")],
            env=ros_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline().strip() == "spinning"
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]
        for symptom in ("never retrieved", "Exception ignored", "Traceback"):
            assert symptom not in err, err[-2000:]
