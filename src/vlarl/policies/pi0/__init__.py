"""π0-style policies: a flow-matching action expert on a VLM prefix, with RL log-probs from Flow-SDE / Flow-Noise."""
