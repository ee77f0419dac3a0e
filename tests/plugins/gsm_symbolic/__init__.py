"""Tests of the GSM-Symbolic template engine."""
