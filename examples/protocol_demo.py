"""Placeholder until the circle-state issue lands: signs and decodes a pledge."""
