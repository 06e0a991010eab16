"""Attack studies: YAML files that name the models to train and the attacks to sweep on them
(`deepshield study configs/X.yaml`), reproducing the seed studies of docs/attacks.md."""

from deepshield.studies.config import AttackStudy, StudyAttack, StudyData, StudyModel, load_study
from deepshield.studies.runner import run_study

__all__ = ["AttackStudy", "StudyAttack", "StudyData", "StudyModel", "load_study", "run_study"]
