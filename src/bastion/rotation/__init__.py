"""Moving-target defense: pools of replicas, one active at a time, replaced on a schedule
or on demand, reached through the docker proxy and switched in HAProxy."""
