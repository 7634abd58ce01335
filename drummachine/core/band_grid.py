"""The band's beat grid, beat by beat (``FollowConfig.grid``): a Kalman filter over the time of its
last beat, its period and the period's change per beat. Pure logic, the standard library only."""

from __future__ import annotations


class BandGrid:
    """The band's beat grid, beat by beat: a Kalman filter over (the time of its last beat, its
    period, the period's change per beat), fed with the tracker's beats (each its last prediction
    before it came). The trend is what the spacing of the last beats lacks on a ramp: an average
    over 8 beats lags a 6% accelerando by 4 beats of it."""

    def __init__(self, measurement: float, period_noise: float, trend_noise: float):
        self.r = measurement ** 2
        self.q = (0.0, period_noise ** 2, trend_noise ** 2)
        self.x: list[float] | None = None  # [beat time, period, period change per beat]
        self.p: list[list[float]] = []
        self.beats = 0  # beats taken in since the last reset

    def reset(self) -> None:
        self.x, self.beats = None, 0

    def observe(self, t: float, period: float) -> None:
        """The band's beat at ``t`` (``period``: the tracker's, for a start)."""
        if self.x is None:
            self.x = [t, period, 0.0]
            self.p = [[self.r, 0.0, 0.0], [0.0, (0.01 * period) ** 2, 0.0], [0.0, 0.0, (0.001 * period) ** 2]]
            self.beats = 1
            return
        steps = round((t - self.x[0]) / self.x[1])
        if steps < 1 or steps > 4:  # not the next beat (a doubled or a lost one): start again
            self.reset()
            self.observe(t, period)
            return
        for _ in range(steps):
            self._predict()
        x, p = self.x, self.p
        s = p[0][0] + self.r
        k = [p[i][0] / s for i in range(3)]
        e = t - x[0]
        self.x = [x[i] + k[i] * e for i in range(3)]
        self.p = [[p[i][j] - k[i] * p[0][j] for j in range(3)] for i in range(3)]
        self.beats += 1

    def _predict(self) -> None:
        # t += period, period += trend: F = [[1,1,0],[0,1,1],[0,0,1]]
        x, p = self.x, self.p
        self.x = [x[0] + x[1], x[1] + x[2], x[2]]
        f = ((1, 1, 0), (0, 1, 1), (0, 0, 1))
        fp = [[sum(f[i][m] * p[m][j] for m in range(3)) for j in range(3)] for i in range(3)]
        self.p = [[sum(fp[i][m] * f[j][m] for m in range(3)) + (self.q[i] if i == j else 0.0) for j in range(3)]
                  for i in range(3)]

    def period_after(self, beats: float) -> float:
        """The band's period ``beats`` beats after its last one (the trend carried on)."""
        return self.x[1] + self.x[2] * beats

    def beat_near(self, anchor: float, t: float) -> float:
        """The band's beat nearest ``t``, counted from its beat ``anchor`` by its period and trend."""
        n = 0
        beat = anchor
        since = (anchor - self.x[0]) / self.x[1]
        if t >= anchor:
            while True:
                step = self.period_after(since + n)
                if beat + step / 2 > t:
                    return beat
                beat += step
                n += 1
        while True:
            step = self.period_after(since + n - 1)
            if beat - step / 2 <= t:
                return beat
            beat -= step
            n -= 1
