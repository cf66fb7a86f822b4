"""devcloud: a local simulated OpenStack for running the task without a cloud."""
