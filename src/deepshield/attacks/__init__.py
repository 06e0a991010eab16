"""deepshield.attacks."""
