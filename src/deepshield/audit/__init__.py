"""`deepshield audit`: clean metrics, white-box and transfer attacks, gradient-masking checks and
explanation sanity of a detector, graded on one report card (docs/audit.md)."""

from deepshield.audit.budgets import BUDGETS, REFERENCE_EPS, AuditBudget, get_budget
from deepshield.audit.card import eps_half, score_card
from deepshield.audit.checks import Check, masking_checks
from deepshield.audit.noise import random_noise
from deepshield.audit.run import Audit, audit_run

__all__ = [
    "BUDGETS",
    "REFERENCE_EPS",
    "Audit",
    "AuditBudget",
    "Check",
    "audit_run",
    "eps_half",
    "get_budget",
    "masking_checks",
    "random_noise",
    "score_card",
]
