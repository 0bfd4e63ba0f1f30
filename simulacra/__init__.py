"""Simulacra: Mimic-compatible cloud mocks and Mirage-compatible service virtualization."""

__version__ = "0.1.0"
