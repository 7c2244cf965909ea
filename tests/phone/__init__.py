"""Tests of the reference phone client (app/phone)."""
