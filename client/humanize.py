"""Numbers as people read them: sizes, ages, durations, rates, ETAs. Pure functions."""

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def size(n_bytes: int) -> str:
    """`1536` -> `1.5 KiB`; binary units, one decimal from KiB on."""
    if n_bytes < 1024:
        return f"{max(n_bytes, 0)} B"
    value = float(n_bytes)
    for unit in _UNITS[1:]:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def duration(seconds: float) -> str:
    """`75` -> `1m15s`, `3700` -> `1h01m`, `190000` -> `2d04h`; under a minute with one
    decimal below 10 s."""
    if seconds < 0:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    total = int(seconds)
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def age(ts_ms: int, now_ms: int) -> str:
    """How long ago an epoch-millisecond timestamp was: `3h05m ago`, `never` for 0."""
    if ts_ms <= 0:
        return "never"
    delta = (now_ms - ts_ms) / 1000
    if delta < 0:
        return f"in {duration(-delta)}"
    return f"{duration(delta)} ago"


def rate(bytes_per_s: float) -> str:
    """`size` per second; `-` when nothing moved yet."""
    if bytes_per_s <= 0:
        return "-"
    return f"{size(int(bytes_per_s))}/s"


def eta(bytes_done: int, bytes_total: int, bytes_per_s: float) -> str:
    """Time left at the current rate; `-` when it cannot be told (no total, no rate)."""
    if bytes_total <= 0 or bytes_per_s <= 0 or bytes_done < 0:
        return "-"
    left = max(bytes_total - bytes_done, 0)
    return duration(left / bytes_per_s)


class RateMeter:
    """Bytes per second over the last `window_s` seconds of (time, bytes done) samples."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._samples: list[tuple[float, int]] = []

    def add(self, at_s: float, bytes_done: int) -> float:
        if self._samples and bytes_done < self._samples[-1][1]:
            self._samples.clear()  # a new phase counts from 0 again
        self._samples.append((at_s, bytes_done))
        while len(self._samples) > 2 and at_s - self._samples[1][0] >= self.window_s:
            self._samples.pop(0)
        return self.rate

    @property
    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0


def progress_text(phase: str, done: int, total: int, bytes_per_s: float) -> str:
    """`exporting grafana01-data  1.2 GiB / 2.8 GiB  290.0 MiB/s  ETA 5.6s`: the phase,
    then what moved, when bytes move."""
    if total <= 0 and done <= 0:
        return phase
    amount = f"{size(done)} / {size(total)}" if total > 0 else size(done)
    return f"{phase}  {amount}  {rate(bytes_per_s)}  ETA {eta(done, total, bytes_per_s)}"
