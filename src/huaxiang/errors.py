class HuaxiangError(Exception):
    """An error a user can act on: the CLI prints its message as one line."""
