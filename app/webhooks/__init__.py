"""Outgoing signed callbacks: endpoint secrets, URL rules, signatures."""
