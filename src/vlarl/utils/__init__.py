"""Small helpers shared by every driver: atomic file I/O, seeding."""
