"""deepshield.disrupt."""
