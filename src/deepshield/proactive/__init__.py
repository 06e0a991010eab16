"""deepshield.proactive."""
