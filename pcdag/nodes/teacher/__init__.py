"""Teachers: the EMA copy of a student module."""
