"""Placement on Ray: the learner group (FSDP2 ranks) and the Ray session every placed component shares."""
