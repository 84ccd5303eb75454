"""How the report marks a target: shared by the report and the pieces that write their own rows."""


def mark(ok: bool) -> str:
    return "met" if ok else "**missed**"
