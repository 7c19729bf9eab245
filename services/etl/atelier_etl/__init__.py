"""Atelier reviews export: the data generator (`atelier-generate`) and the loader (`atelier-load`)."""
