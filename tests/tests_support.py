"""Paths shared by test modules (importable because pytest puts tests/ on sys.path)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT.parent / "shared" / "reference"
REFERENCE_EXAMPLES = REFERENCE / "madengine-examples"
