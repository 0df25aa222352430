"""The running service: its composition root and the flows it drives (offers, dial attempts)."""
