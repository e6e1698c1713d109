"""A pack whose package does not parse."""
def broken(:
    pass
