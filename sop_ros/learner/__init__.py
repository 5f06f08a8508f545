"""The learner process composed from the link (gRPC services), the stores and the core trainer.

A composition layer like sop_ros.commands, but without any CLI: `sop learner` parses flags into
LearnerSettings and runs a LearnerProcess; tests and tools can run one in-process.
"""

from sop_ros.learner.process import LearnerProcess, NothingToTrainError
from sop_ros.learner.settings import LearnerSettings

__all__ = ["LearnerProcess", "LearnerSettings", "NothingToTrainError"]
