"""Shares shown as percentages, the same way on every screen."""


def percent(share: float, decimals: int = 0) -> str:
    """A share (0 to 1) as a percentage that says 100% only when all is done and 0% only when nothing is:
    plain rounding shows 7,160 of 7,161 texts as 100% though one still waits."""
    shown, step = share * 100, 10.0**-decimals
    if 0 < share < 1:
        shown = min(max(shown, step), 100 - step)
    return f"{shown:.{decimals}f}%"
