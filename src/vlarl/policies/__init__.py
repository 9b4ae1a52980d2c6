"""VLA policies: one folder per family (``openvla/``); see ``base.VLAPolicy`` for the contract."""
