"""The model's random draws, each a small named function over a named stream: one
random.Random per concern (calls, Twilio, clients, leads), seeded from the scenario's seed and
the stream's name, so a change in one concern's draws never shifts another's (same seed → the
same history)."""
from __future__ import annotations

import random
from math import cos, exp, log, sin, sqrt, tau as TWOPI
from typing import Any

from loopfix.sim.world import Call, new_object


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
        t = s.twilio
        self.twilio_shape = (t.slow_fraction, t.slow_range_s, t.latency_median_s, t.latency_sigma)

    def download_time(self, t: Any = None) -> float:
        """How long Twilio takes to serve one recording under `t` (default: the scenario's
        [twilio], read once): lognormal, or the slow tail. Random.uniform and Random.gauss
        inline (their own formulas, the same draws, gauss's spare value kept on the stream)."""
        if t is None:
            slow_fraction, slow_range_s, median_s, sigma = self.twilio_shape
        else:
            slow_fraction, slow_range_s, median_s, sigma = (t.slow_fraction, t.slow_range_s, t.latency_median_s,
                                                            t.latency_sigma)
        rng = self.rng_twilio
        draw = rng.random
        if draw() < slow_fraction:
            lo, hi = slow_range_s
            return lo + (hi - lo) * draw()
        z = rng.gauss_next  # gauss(0.0, 1.0): z itself (0.0 + z * 1.0 is z but for -0.0, and exp(±0) is 1)
        rng.gauss_next = None
        if z is None:
            x2pi = draw() * TWOPI
            g2rad = sqrt(-2.0 * log(1.0 - draw()))
            z = cos(x2pi) * g2rad
            rng.gauss_next = sin(x2pi) * g2rad
        return median_s * exp(sigma * z)

    def fetch_fails(self) -> bool:
        return self.rng_twilio.random() < self.twilio.fault_rate

    def new_call(self, archive: bool = False) -> Call:
        """A call and its recording, drawn from the calls stream in a fixed order: has a URL, an
        odd URL, its business, when its CallLog commits (late or not), then Twilio's time."""
        n = next(self.ids)
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
        num = str(n).zfill(6)  # f"{n:06d}" (n > 0), for less
        call = new_object(Call)  # Call(...), every field (sim.world.new_object)
        call.call_sid, call.recording_sid, call.business_id = "CA" + num, "RE" + num, 1 + business
        call.has_url, call.calllog_at, call.download_s = has_url, calllog_at, self.download_time()
        call.archive, call.served = archive, self.served_by_shape[odd] if has_url else ""
        call.file_ready = call.audio_ok = False
        return call
