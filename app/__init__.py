"""Simwire: a pay-per-message SMS API with phones as the radio."""
