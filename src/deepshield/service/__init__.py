"""The scan service: a FastAPI app that answers P(fake) and Grad-CAM for uploads to one run's
detector, or to an image and a speech run together (`deepshield serve RUN_DIR [--speech-run
SPEECH_RUN]`; docs/service.md)."""

from deepshield.service.app import create_app
from deepshield.service.background import running
from deepshield.service.scanner import Scanner
from deepshield.service.uploads import Upload, UploadError

__all__ = ["Scanner", "Upload", "UploadError", "create_app", "running"]
