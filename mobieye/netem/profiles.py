"""Named network link profiles for the edge <-> worker benchmark link.

Every figure is per direction: ``delay_ms`` is one-way, so the round trip is about twice it.
``jitter_ms`` is the half-width of a uniform distribution around ``delay_ms``: each packet's
one-way delay is drawn from ``[delay_ms - jitter_ms, delay_ms + jitter_ms]`` (clipped at 0).
Uniform rather than normal because a bounded spread keeps the worst case known; with the
in-order rule of the wire (see ``mobieye.netem.wire``) one long normal tail would hold back
every packet behind it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LinkProfile:
    """One emulated link, applied independently in each direction.

    ``loss`` is the per-packet drop probability in each direction (a round trip loses about
    ``1 - (1 - loss) ** 2``). ``rate_kbps`` is the bottleneck rate per direction in kbit/s
    (1000 bit/s) counted on Ethernet frames; ``None`` means unlimited. ``queue_ms`` bounds the
    bottleneck queue by the time it takes to drain (drop-tail beyond it); it only matters with a
    rate. ``emulated=False`` is the loopback marker: no namespaces, everything on 127.0.0.1.
    """

    name: str
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    rate_kbps: float | None = None
    queue_ms: float = 100.0
    emulated: bool = True

    def __post_init__(self) -> None:
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ValueError(f"link {self.name!r}: delay_ms and jitter_ms must be >= 0")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"link {self.name!r}: loss must be in [0, 1), got {self.loss}")
        if self.rate_kbps is not None and self.rate_kbps <= 0:
            raise ValueError(f"link {self.name!r}: rate_kbps must be > 0 or None")
        if self.queue_ms <= 0:
            raise ValueError(f"link {self.name!r}: queue_ms must be > 0")

    @property
    def rtt_ms(self) -> float:
        """Nominal round-trip time, ignoring jitter, queueing and serialization."""
        return 2.0 * self.delay_ms


LOOPBACK = LinkProfile(name="loopback", emulated=False)

PROFILES: dict[str, LinkProfile] = {
    p.name: p
    for p in (
        LOOPBACK,
        LinkProfile(name="lan", delay_ms=0.5, jitter_ms=0.1, loss=0.0, rate_kbps=100_000),
        LinkProfile(name="wifi", delay_ms=5.0, jitter_ms=3.0, loss=0.002, rate_kbps=30_000),
        # ~70 ms RTT with ~30 ms of RTT jitter, a typical loaded LTE uplink.
        LinkProfile(name="lte", delay_ms=35.0, jitter_ms=15.0, loss=0.01, rate_kbps=5_000),
        # A deeper queue: 1 Mbit/s drains 100 ms in only ~8 full-size frames.
        LinkProfile(
            name="3g", delay_ms=100.0, jitter_ms=40.0, loss=0.02, rate_kbps=1_000, queue_ms=300.0
        ),
    )
}


def get_profile(name: str) -> LinkProfile:
    """The profile called ``name``; ValueError naming the valid ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        valid = ", ".join(sorted(PROFILES))
        raise ValueError(f"unknown link profile {name!r}; valid: {valid}") from None
