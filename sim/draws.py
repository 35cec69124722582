"""The model's random draws, each a small named function over a named stream: one
random.Random per concern (calls, Twilio, clients, leads), seeded from the scenario's seed and
the stream's name, so a change in one concern's draws never shifts another's (same seed → the
same history)."""
from __future__ import annotations

import math
import random
from typing import Any

from loopfix.sim.world import Call


class Draws:
    """Named random streams and the draws made from them."""

    def init_draws(self, seed: int) -> None:
        self.rng_calls = random.Random(f"{seed}:calls")
        self.rng_twilio = random.Random(f"{seed}:twilio")
        self.rng_clients = random.Random(f"{seed}:clients")
        self.rng_leads = random.Random(f"{seed}:leads")
        # what new_call reads on every call, read once (the scenario is frozen)
        s = self.scenario
        r, c = s.recordings, s.calllog
        self.call_shape = (r.url_fraction, r.odd_url_fraction, s.businesses, s.businesses.bit_length(),
                           c.late_fraction, c.late_delay_s, c.commit_delay_s)

    def download_time(self, t: Any = None) -> float:
        """How long Twilio takes to serve one recording: lognormal, or the slow tail."""
        t = t or self.scenario.twilio
        if self.rng_twilio.random() < t.slow_fraction:
            return self.rng_twilio.uniform(*t.slow_range_s)
        return t.latency_median_s * math.exp(t.latency_sigma * self.rng_twilio.gauss(0.0, 1.0))

    def fetch_fails(self) -> bool:
        return self.rng_twilio.random() < self.twilio.fault_rate

    def new_call(self, archive: bool = False) -> Call:
        """A call and its recording, drawn from the calls stream in a fixed order: has a URL, an
        odd URL, its business, when its CallLog commits (late or not), then Twilio's time."""
        self._ids = n = self._ids + 1
        now, rng = self.env._now, self.rng_calls
        draw = rng.random
        url_fraction, odd_fraction, businesses, bits, late_fraction, late_s, commit_s = self.call_shape
        has_url = archive or draw() < url_fraction
        odd = draw() < odd_fraction
        # the business: 1 + rng.randrange(businesses), inline — Random._randbelow's own loop
        # (getrandbits of the bit length until below businesses), the same draws
        business = rng.getrandbits(bits)
        while business >= businesses:
            business = rng.getrandbits(bits)
        if archive:
            calllog_at = now
        else:  # late or not, then a uniform delay: a + (b - a) * random(), as Random.uniform
            lo, hi = late_s if draw() < late_fraction else commit_s
            calllog_at = now + (lo + (hi - lo) * draw())
        num = f"{n:06d}"
        # positional, in Call's field order: call_sid, recording_sid, business_id, has_url,
        # calllog_at, download_s, archive, served (draws in the same order as ever)
        return Call("CA" + num, "RE" + num, 1 + business, has_url, calllog_at, self.download_time(), archive,
                    self.served_by_shape[odd] if has_url else "")
