"""Shared package of every function: settings, AWS clients, domain models and logic.

Handlers in functions/ stay thin; everything they do is here, importable and testable
without Lambda.
"""
