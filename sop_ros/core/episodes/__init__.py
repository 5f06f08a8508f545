"""Episodes: the Episode schema, its on-disk MCAP file, assembly from a robot's step stream, content hashes."""
