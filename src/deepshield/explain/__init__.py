"""deepshield.explain."""
