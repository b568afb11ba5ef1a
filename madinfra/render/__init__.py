"""Presenting plans and state: human text with colours, versioned JSON, apply progress."""

from madinfra.render.human import NO_CHANGES, plan_lines, plan_text, print_plan, summary_line
from madinfra.render.json_plan import FORMAT_VERSION, plan_to_data

__all__ = ["FORMAT_VERSION", "NO_CHANGES", "plan_lines", "plan_text", "plan_to_data", "print_plan", "summary_line"]
