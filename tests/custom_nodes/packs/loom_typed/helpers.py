"""A sibling module reached by a relative import from impl.py."""


def double(value: int) -> int:
    return 2 * value
