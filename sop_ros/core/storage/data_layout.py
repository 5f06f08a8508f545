"""Layout of a learner data directory, shared by the learner, `sop pretrain`, `sop demo` and `sop experiment`.

    <data_dir>/episodes/     fleet episodes (EpisodeStore; the online buffer)
    <data_dir>/offline/      offline prior data, e.g. scripted demos (EpisodeStore)
    <data_dir>/checkpoints/  immutable checkpoint versions (CheckpointStore)
    <data_dir>/tensorboard/  training scalars
A module of its own so that observers (the CLI's live views) need not import torch.
"""

EPISODES_DIR = "episodes"
OFFLINE_DIR = "offline"
CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
