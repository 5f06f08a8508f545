"""ROS-free, gRPC-free core: episodes, storage, sampler, algorithms, model, training."""
