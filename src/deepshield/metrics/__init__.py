"""deepshield.metrics."""
