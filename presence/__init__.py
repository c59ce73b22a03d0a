"""The presence tracker service: who is online, told by edges, watched by clients."""
