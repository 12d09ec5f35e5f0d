"""Helpers shared by test modules; not collected as tests themselves."""
