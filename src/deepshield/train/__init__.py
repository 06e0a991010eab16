"""deepshield.train."""
