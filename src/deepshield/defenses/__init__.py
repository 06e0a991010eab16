"""deepshield.defenses."""
